//! Comparing a command's output with the README's expected text, the way
//! trycmd does: `[..]` in a line matches any text within that line, and a
//! line that is only `...` matches any number of whole lines (none included).
//!
//! The comparison is an alignment (an edit distance in which `...` absorbs
//! lines for free), so that one answer serves both checking (is the cost 0?)
//! and rewriting: the README's lines that still match are kept with their
//! wildcards, and only what differs is replaced by the real output.

/// A line of the README's expected text that stands for any number of lines.
pub const SKIP_LINES: &str = "...";
/// Text within a line that stands for any text (an empty one included).
pub const ANY_TEXT: &str = "[..]";

/// Whether `actual` is one of the lines `pattern` describes. Trailing spaces
/// are not compared (editors strip them from the README).
pub fn line_matches(pattern: &str, actual: &str) -> bool {
    let (pattern, actual) = (pattern.trim_end(), actual.trim_end());
    let pieces: Vec<&str> = pattern.split(ANY_TEXT).collect();
    if pieces.len() == 1 {
        return pattern == actual;
    }
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if actual.len() < first.len() + last.len()
        || !actual.starts_with(first)
        || !actual.ends_with(last)
    {
        return false;
    }
    // With only "any text" wildcards, taking each middle piece at its
    // leftmost place never loses a match.
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// One line of the alignment of the README's text with the real output.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A README line that holds: a match, or a `...` (kept as written).
    Kept(String),
    /// A README line that the output does not have.
    Gone(String),
    /// An output line that the README does not have.
    New(String),
}

/// The cheapest alignment of `expected` (README lines) with `actual`
/// (output lines); it is a match when no line is `Gone` or `New`. Costs:
/// a line gone, new or changed 1; a match, or a line under `...`, 0.
pub fn align(expected: &[String], actual: &[String]) -> Vec<Line> {
    let (n, m) = (expected.len(), actual.len());
    let skip = |i: usize| expected[i].trim_end() == SKIP_LINES;
    // cost[i][j]: the least cost to align expected[i..] with actual[j..].
    let mut cost = vec![vec![0usize; m + 1]; n + 1];
    for j in (0..m).rev() {
        cost[n][j] = cost[n][j + 1] + 1;
    }
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            cost[i][j] = if skip(i) {
                let end = cost[i + 1][j];
                if j < m {
                    end.min(cost[i][j + 1])
                } else {
                    end
                }
            } else {
                let mut best = cost[i + 1][j] + 1;
                if j < m {
                    best = best.min(cost[i][j + 1] + 1);
                    // A changed line costs one, as a line gone and one new cost
                    // two: so a `...` before it does not swallow the new text.
                    let changed = usize::from(!line_matches(&expected[i], &actual[j]));
                    best = best.min(cost[i + 1][j + 1] + changed);
                }
                best
            };
        }
    }
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i == n {
            lines.push(Line::New(actual[j].clone()));
            j += 1;
        } else if skip(i) {
            // Absorb the line only where ending the `...` here would cost more.
            if j < m && cost[i][j] != cost[i + 1][j] {
                j += 1;
            } else {
                lines.push(Line::Kept(expected[i].clone()));
                i += 1;
            }
        } else if j < m
            && line_matches(&expected[i], &actual[j])
            && cost[i][j] == cost[i + 1][j + 1]
        {
            lines.push(Line::Kept(expected[i].clone()));
            i += 1;
            j += 1;
        } else if j < m && cost[i][j] == cost[i + 1][j + 1] + 1 {
            lines.push(Line::Gone(expected[i].clone()));
            lines.push(Line::New(actual[j].clone()));
            i += 1;
            j += 1;
        } else if cost[i][j] == cost[i + 1][j] + 1 {
            lines.push(Line::Gone(expected[i].clone()));
            i += 1;
        } else {
            lines.push(Line::New(actual[j].clone()));
            j += 1;
        }
    }
    lines
}

pub fn is_match(lines: &[Line]) -> bool {
    lines.iter().all(|line| matches!(line, Line::Kept(_)))
}

/// The README text that the output would have: what held, plus the output's
/// own lines where the README differed.
pub fn rewritten(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|line| match line {
            Line::Kept(text) | Line::New(text) => Some(text.clone()),
            Line::Gone(_) => None,
        })
        .collect()
}

/// A diff for a failure message: `-` README, `+` output, two spaces: both.
pub fn diff(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|line| match line {
            Line::Kept(text) => format!("  {text}\n"),
            Line::Gone(text) => format!("- {text}\n"),
            Line::New(text) => format!("+ {text}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn any_text_matches_within_one_line_only() {
        assert!(line_matches("arrived after [..] s", "arrived after 2.01 s"));
        assert!(line_matches("a[..]b[..]c", "abc"));
        assert!(line_matches("[..]", ""));
        assert!(!line_matches("a[..]b", "ab c"));
        assert!(!line_matches("ab[..]ba", "aba"));
        assert!(line_matches("plain  ", "plain"));
    }

    #[test]
    fn three_dots_skip_any_number_of_lines() {
        let expected = lines("first\n...\nlast");
        assert!(is_match(&align(&expected, &lines("first\nlast"))));
        assert!(is_match(&align(&expected, &lines("first\na\nb\nlast"))));
        assert!(!is_match(&align(&expected, &lines("first\na\nb"))));
        assert!(is_match(&align(&lines("..."), &[])));
    }

    #[test]
    fn a_rewrite_keeps_what_holds_and_replaces_what_differs() {
        let expected = lines("head [..]\n...\n113 created\ntail");
        let actual = lines("head 3.10\nx\ny\n112 created\ntail\nextra");
        let aligned = align(&expected, &actual);
        assert!(!is_match(&aligned));
        assert_eq!(
            rewritten(&aligned),
            lines("head [..]\n...\n112 created\ntail\nextra")
        );
    }
}
