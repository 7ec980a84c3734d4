//! A count with its noun, the way every message of the tool says one:
//! "1 message", "2 messages", "113 entities" (never "1 messages").

/// `count` followed by `noun`, in the plural unless the count is one.
pub fn counted(count: impl Into<u64>, noun: &str) -> String {
    let count: u64 = count.into();
    match (count, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{count} {stem}ies"),
        _ => format!("{count} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_words() {
        assert_eq!(counted(1u64, "entity"), "1 entity");
        assert_eq!(counted(113u64, "entity"), "113 entities");
        assert_eq!(counted(0u64, "message"), "0 messages");
        assert_eq!(counted(1u32, "message"), "1 message");
        assert_eq!(counted(2u64, "conflict"), "2 conflicts");
    }
}
