//! Ctrl-C (SIGINT) and SIGTERM as a request to stop cleanly, for commands
//! that must not leave work half done: the first signal only sets a flag
//! that the command polls or awaits (it then finishes the step it is in and
//! reports); a second signal exits at once, for the operator who will not
//! wait.
//!
//! Without a listener the operating system's default applies (the process
//! dies silently), so a command calls [`Interrupt::listen`] before its first
//! step that must not be cut short.

use std::sync::OnceLock;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The stop requests of this process: `None` until a signal came, then its name.
static REQUESTS: OnceLock<watch::Receiver<Option<&'static str>>> = OnceLock::new();

/// A handle on the process's stop requests; clone one for every task that
/// must stop.
#[derive(Debug, Clone)]
pub struct Interrupt {
    requests: watch::Receiver<Option<&'static str>>,
}

impl Interrupt {
    /// Listens for SIGINT and SIGTERM from now on (once per process; later
    /// calls share the first listener). On a second signal, `on_second` is
    /// printed to stderr and the process exits with 128 + the signal's
    /// number, as if the signal had killed it. Must run inside the tokio
    /// runtime.
    pub fn listen(on_second: &'static str) -> Interrupt {
        let requests = REQUESTS.get_or_init(|| {
            let (sender, receiver) = watch::channel(None);
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(interrupt), Ok(terminate)) => {
                    tokio::spawn(forward(interrupt, terminate, sender, on_second));
                }
                // No signal handling (never seen on Linux): the default
                // behaviour stays, and nothing is ever requested.
                _ => drop(sender),
            }
            receiver
        });
        Interrupt {
            requests: requests.clone(),
        }
    }

    /// A handle whose request never comes (tests, or when nothing listens).
    pub fn never() -> Interrupt {
        let (_, requests) = watch::channel(None);
        Interrupt { requests }
    }

    /// The signal that asked to stop, if one did.
    pub fn requested(&self) -> Option<&'static str> {
        *self.requests.borrow()
    }

    /// Waits until a stop is requested (at once when it already was); never
    /// returns when no signal can come.
    pub async fn wait(&mut self) -> &'static str {
        loop {
            if let Some(signal) = self.requested() {
                return signal;
            }
            if self.requests.changed().await.is_err() {
                // Nothing can send a request any more.
                std::future::pending::<()>().await;
            }
        }
    }
}

async fn forward(
    mut interrupt: tokio::signal::unix::Signal,
    mut terminate: tokio::signal::unix::Signal,
    requests: watch::Sender<Option<&'static str>>,
    on_second: &'static str,
) {
    let mut received = 0;
    loop {
        let (name, number) = tokio::select! {
            _ = interrupt.recv() => ("SIGINT", 2),
            _ = terminate.recv() => ("SIGTERM", 15),
        };
        received += 1;
        // On a new line: a progress bar may be on the current one.
        if received > 1 {
            eprintln!("\n{name} again: {on_second}");
            std::process::exit(128 + number);
        }
        // Said at once, as terraform does: the stop may take a few round trips.
        eprintln!("\n{name}: stopping at a safe point ({name} again: {on_second})");
        requests.send_replace(Some(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_handle_that_never_fires_stays_quiet() {
        let mut never = Interrupt::never();
        assert_eq!(never.requested(), None);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), never.wait()).await;
        assert!(waited.is_err());
    }
}
