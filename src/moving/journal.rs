//! The durable memory of a move across runs: the identity of every message
//! the target confirmed, written and fsynced after the target's confirm and
//! before the source's acknowledgement. A run killed between the two leaves
//! the message in its source queue, and the next run finds it in the journal
//! and acknowledges it without landing it a second time.
//!
//! Each identity is written as soon as its confirm is seen (a killed process
//! loses nothing the kernel has), and fsynced once per batch of confirms,
//! before that batch's acknowledgement. What it cannot cover: confirms the
//! process had received but not yet written when it died (a few at most),
//! the batch not yet fsynced when the machine itself crashes (at most
//! `--prefetch` messages), and a publish the target committed but whose
//! confirm was lost with the connection (also at most `--prefetch`).
//!
//! Each message is also noted just before it is published (`?` and its
//! identity, not fsynced): a message noted but never confirmed is "in
//! doubt" to the next run. It may be in the target (the broker took the
//! publish, the confirm never arrived) or not; it is published again, and
//! counted, so that the report says exactly how many messages may be there
//! twice. A publish the target refused or returned is noted too (`-`): it
//! did not land, and is not in doubt.
//!
//! One file per move (source vhost and cascade, target vhost and cascade),
//! a header line naming the move, then one identity per line. A torn last
//! line (a crash mid-write) is ignored. The file is removed once a run
//! leaves the source empty: nothing it records can come back.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

use crate::exit::bad_input;
use crate::moving::identity::Identity;

const MAGIC: &str = "delaytopo-journal v1";
/// The prefix of a "being published" line.
const IN_DOUBT: char = '?';
/// The prefix of a "the target refused it" line: that publish did not land.
const REFUSED: char = '-';

/// What the journal says of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// An earlier run saw the target confirm it.
    Landed,
    /// An earlier run published it but saw no confirm: it may be in the target.
    InDoubt,
    Unknown,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Identities recorded by earlier runs of this move as landed.
    earlier: HashSet<Identity>,
    /// Published by an earlier run, but never confirmed to it.
    in_doubt: HashSet<Identity>,
    /// Whether an earlier run of this move left the journal (it did not finish).
    pub existed: bool,
    /// Open for appending; `None` in a dry run, which only reads.
    file: Option<File>,
    /// Identities appended by this run.
    appended: AtomicU64,
}

impl Journal {
    /// The journal of the move that `header` names, in `directory`. A dry run
    /// only reads it (and creates nothing); a real run creates it.
    pub fn open(directory: &Path, header: &str, dry_run: bool) -> Result<Journal> {
        let path = directory.join(file_name(header));
        let context = || format!("journal {}", path.display());
        let existed = path.exists();
        let file = if dry_run {
            None
        } else {
            std::fs::create_dir_all(directory)
                .map_err(|e| journal_problem(directory, &e))
                .with_context(context)?;
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| journal_problem(&path, &e))?;
            if !existed {
                // The new file's name must survive a crash too.
                (&file)
                    .write_all(format!("{MAGIC}\t{header}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .and_then(|()| File::open(directory)?.sync_all())
                    .map_err(|e| journal_problem(&path, &e))?;
            }
            Some(file)
        };
        let (earlier, in_doubt) = if existed {
            read(&path, header).with_context(context)?
        } else {
            Default::default()
        };
        if let Some(file) = &file {
            end_with_newline(file).with_context(context)?;
        }
        Ok(Journal {
            path,
            earlier,
            in_doubt,
            existed,
            file,
            appended: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What earlier runs recorded of this message.
    pub fn known(&self, identity: &Identity) -> Known {
        if self.earlier.contains(identity) {
            Known::Landed
        } else if self.in_doubt.contains(identity) {
            Known::InDoubt
        } else {
            Known::Unknown
        }
    }

    pub fn earlier_count(&self) -> usize {
        self.earlier.len()
    }

    /// Appends one landed message, as soon as its confirm is seen: once
    /// written, it survives the process being killed (the kernel has it).
    pub fn append(&self, landed: &Identity) -> Result<()> {
        self.write(&format!("{}\n", landed.to_hex()))
    }

    /// Notes a message about to be published (before the publish, so that
    /// no publish can happen without its note).
    pub fn publishing(&self, identity: &Identity) -> Result<()> {
        self.write(&format!("{IN_DOUBT}{}\n", identity.to_hex()))
    }

    /// Notes that the message's last publish did not land (the target
    /// refused or returned it): no longer in doubt, unless published again.
    pub fn refused(&self, identity: &Identity) -> Result<()> {
        self.write(&format!("{REFUSED}{}\n", identity.to_hex()))
    }

    fn write(&self, line: &str) -> Result<()> {
        let Some(mut file) = self.file.as_ref() else {
            return Ok(());
        };
        file.write_all(line.as_bytes())
            .with_context(|| format!("writing the journal {}", self.path.display()))?;
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until what was appended is on disk (it then survives a crash
    /// of the machine too): call it before acknowledging those messages at
    /// the source. On a thread of its own, so that confirms go on being
    /// collected meanwhile.
    pub async fn sync(&self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let context = || format!("writing the journal {}", self.path.display());
        let file = file.try_clone().with_context(context)?;
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(context)?
            .with_context(context)
    }

    /// Whether no run of this move ever recorded a message in it.
    pub fn is_empty(&self) -> bool {
        self.earlier.is_empty()
            && self.in_doubt.is_empty()
            && self.appended.load(Ordering::Relaxed) == 0
    }

    /// The move is complete (its source is empty), or the journal holds
    /// nothing: nothing recorded can come back, so the journal goes.
    pub fn remove(self) -> Result<()> {
        if self.file.is_some() {
            std::fs::remove_file(&self.path)
                .with_context(|| format!("removing the journal {}", self.path.display()))?;
            // The directory too, when nothing else is in it.
            if let Some(directory) = self.path.parent() {
                let _ = std::fs::remove_dir(directory);
            }
        }
        Ok(())
    }
}

/// `<first words of the header>-<16 hex digits of its hash>.journal`.
fn file_name(header: &str) -> String {
    let digest = Sha256::digest(header.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let readable: String = header
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{readable}-{hash}.journal")
}

/// The landed identities, and the published ones never confirmed.
fn read(path: &Path, header: &str) -> Result<(HashSet<Identity>, HashSet<Identity>)> {
    let mut lines = BufReader::new(File::open(path)?).lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    if first != format!("{MAGIC}\t{header}") {
        return Err(bad_input(format!(
            "{} is not the journal of this move (it starts {first:?}); give --journal another directory",
            path.display()
        )));
    }
    let (mut landed, mut published) = (HashSet::new(), HashSet::new());
    for line in lines {
        let line = line?;
        // A line torn by a crash mid-write is not an identity: skipped.
        // In order: a message refused, then published again, is in doubt.
        if let Some(hex) = line.strip_prefix(IN_DOUBT) {
            published.extend(Identity::from_hex(hex));
        } else if let Some(hex) = line.strip_prefix(REFUSED) {
            if let Some(identity) = Identity::from_hex(hex) {
                published.remove(&identity);
            }
        } else {
            landed.extend(Identity::from_hex(&line));
        }
    }
    published.retain(|identity| !landed.contains(identity));
    Ok((landed, published))
}

/// After a torn last line, the next record must start on a line of its own.
fn end_with_newline(mut file: &File) -> Result<()> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(length - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

fn journal_problem(path: &Path, error: &std::io::Error) -> anyhow::Error {
    bad_input(format!(
        "--journal: cannot write {}: {error} (give another directory, or --no-journal)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(n: u8) -> Identity {
        Identity::repeated(n)
    }

    #[tokio::test]
    async fn what_one_run_records_the_next_run_knows() {
        let directory = tempfile::tempdir().unwrap();
        let first = Journal::open(directory.path(), "move a -> b", false).unwrap();
        assert!(!first.existed);
        first.append(&identity(1)).unwrap();
        first.append(&identity(2)).unwrap();
        first.sync().await.unwrap();
        assert!(!first.is_empty());
        drop(first);

        let second = Journal::open(directory.path(), "move a -> b", false).unwrap();
        assert!(second.existed);
        assert_eq!(second.known(&identity(2)), Known::Landed);
        assert_eq!(second.known(&identity(3)), Known::Unknown);
        second.remove().unwrap();
        let third = Journal::open(directory.path(), "move a -> b", true).unwrap();
        assert!(!third.existed);
        assert_eq!(third.earlier_count(), 0);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_record_is_whole() {
        let directory = tempfile::tempdir().unwrap();
        let journal = Journal::open(directory.path(), "m", false).unwrap();
        journal.append(&identity(1)).unwrap();
        let path = journal.path().to_path_buf();
        drop(journal);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"0202")
            .unwrap();

        let journal = Journal::open(directory.path(), "m", false).unwrap();
        assert_eq!(journal.earlier_count(), 1);
        journal.append(&identity(3)).unwrap();
        drop(journal);
        let journal = Journal::open(directory.path(), "m", true).unwrap();
        assert_eq!(journal.known(&identity(1)), Known::Landed);
        assert_eq!(journal.known(&identity(3)), Known::Landed);
    }

    #[test]
    fn a_dry_run_creates_nothing_and_each_move_has_its_own_file() {
        let directory = tempfile::tempdir().unwrap();
        let dry = Journal::open(&directory.path().join("sub"), "m", true).unwrap();
        dry.append(&identity(1)).unwrap();
        assert!(dry.is_empty());
        assert!(!directory.path().join("sub").exists());
        let one = Journal::open(directory.path(), "move one", false).unwrap();
        let other = Journal::open(directory.path(), "move other", false).unwrap();
        assert_ne!(one.path(), other.path());
    }

    #[test]
    fn a_message_published_without_a_confirm_is_in_doubt_to_the_next_run() {
        let directory = tempfile::tempdir().unwrap();
        let journal = Journal::open(directory.path(), "m", false).unwrap();
        for n in [1, 2] {
            journal.publishing(&identity(n)).unwrap();
        }
        journal.append(&identity(1)).unwrap();
        drop(journal);
        let journal = Journal::open(directory.path(), "m", true).unwrap();
        assert_eq!(journal.known(&identity(1)), Known::Landed);
        assert_eq!(journal.known(&identity(2)), Known::InDoubt);
        assert_eq!(journal.earlier_count(), 1);
    }

    #[test]
    fn a_refused_publish_is_not_in_doubt_until_published_again() {
        let directory = tempfile::tempdir().unwrap();
        let journal = Journal::open(directory.path(), "m", false).unwrap();
        for n in [1, 2] {
            journal.publishing(&identity(n)).unwrap();
            journal.refused(&identity(n)).unwrap();
        }
        journal.publishing(&identity(2)).unwrap();
        drop(journal);
        let journal = Journal::open(directory.path(), "m", true).unwrap();
        assert_eq!(journal.known(&identity(1)), Known::Unknown);
        assert_eq!(journal.known(&identity(2)), Known::InDoubt);
    }

    #[test]
    fn another_moves_journal_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let journal = Journal::open(directory.path(), "m", false).unwrap();
        let path = journal.path().to_path_buf();
        drop(journal);
        std::fs::write(&path, "something else\n").unwrap();
        let error = Journal::open(directory.path(), "m", false).unwrap_err();
        assert!(
            format!("{error:#}").contains("not the journal"),
            "{error:#}"
        );
    }
}
