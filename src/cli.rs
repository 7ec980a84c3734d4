//! The command line (SPEC §3): clap definitions only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "delaytopo",
    version,
    about = "Provision, verify and tear down the binary delay cascade on RabbitMQ",
    long_about = "Provision, verify and tear down the binary delay cascade on RabbitMQ: \
        topic exchanges and quorum queues chained by TTL and dead-lettering that give \
        NServiceBus-style durable delayed delivery without a broker plugin.\n\n\
        Exit codes: 0 done / matches, 1 drift, pending changes, conflict or refusal, \
        2 bad input, 3 broker unusable."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Topology file [default: topology.yaml; without one, the NServiceBus v2
    /// defaults].
    #[arg(
        short = 'f',
        long = "topology",
        env = "DELAYTOPO_TOPOLOGY",
        hide_env_values = true,
        value_name = "PATH",
        global = true
    )]
    pub topology: Option<PathBuf>,
    /// AMQP URI; overrides broker.url. The vhost is its path. Repeat it (or
    /// separate with commas) for a cluster's nodes: they are tried in order.
    #[arg(
        long,
        env = "DELAYTOPO_URL",
        hide_env_values = true,
        value_name = "AMQP_URI",
        value_delimiter = ',',
        global = true
    )]
    pub url: Vec<String>,
    /// Management API base URL; overrides broker.management_url. One for
    /// all nodes (a load balancer), or one per --url, in the same order.
    #[arg(
        long,
        env = "DELAYTOPO_MANAGEMENT_URL",
        hide_env_values = true,
        value_name = "URL",
        value_delimiter = ',',
        global = true
    )]
    pub management_url: Vec<String>,
    /// Vhost to act on; repeat for several. Overrides the URL's vhost and broker.vhosts.
    #[arg(long = "vhost", value_name = "VHOST", global = true)]
    pub vhosts: Vec<String>,
    /// How many vhosts are handled at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub concurrency: u16,
    /// Output format: text or json (completions: text only; verify also
    /// prometheus). A format the command does not write is an error.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT", default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// No progress bars (they are also off when stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Seconds any broker operation may take before giving up with exit 3.
    #[arg(
        long,
        env = "DELAYTOPO_TIMEOUT",
        hide_env_values = true,
        default_value_t = 30.0,
        value_name = "SECONDS",
        global = true
    )]
    pub timeout: f64,
    /// Seconds the whole of verify, plan, probe or install may take (health
    /// checks, deploy steps); past it they stop with exit 3. teardown,
    /// migrate and transfer are bounded per operation by --timeout only, so
    /// that they never stop between two halves of a step.
    #[arg(
        long,
        env = "DELAYTOPO_DEADLINE",
        hide_env_values = true,
        value_name = "SECONDS",
        global = true
    )]
    pub deadline: Option<f64>,
    // Last: the heading applies to every global option after it.
    #[command(flatten, next_help_heading = "Credentials and TLS")]
    pub access: AccessArgs,
}

/// Where the password comes from and the TLS identity, for the broker of
/// `--url` (transfer's target has its own `--to-` options).
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// File holding the password (e.g. a mounted secret); overrides the URL's.
    /// DELAYTOPO_PASSWORD may hold the password itself.
    #[arg(
        long,
        env = "DELAYTOPO_PASSWORD_FILE",
        hide_env_values = true,
        value_name = "PATH",
        global = true
    )]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for amqps:// and https://, instead of
    /// the system store.
    #[arg(
        long,
        env = "DELAYTOPO_TLS_CA_CERT_FILE",
        hide_env_values = true,
        value_name = "PATH",
        global = true
    )]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// PEM client certificate, shown to the broker on AMQPS and HTTPS; with
    /// `?auth_mechanism=external` in the URL it is also the AMQP login.
    #[arg(
        long,
        env = "DELAYTOPO_TLS_CERT_FILE",
        hide_env_values = true,
        value_name = "PATH",
        global = true,
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (unencrypted).
    #[arg(
        long,
        env = "DELAYTOPO_TLS_KEY_FILE",
        hide_env_values = true,
        value_name = "PATH",
        global = true,
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    /// Prometheus textfile-collector format (verify only).
    Prometheus,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create what is missing; idempotent; never deletes.
    #[command(
        after_long_help = "Exit codes: 0 created or nothing to do, 1 a conflicting \
        entity (reported with expected vs actual; the rest is still created), 2 bad input, \
        3 broker unusable.\n\nExample:\n  delaytopo --url amqp://app@rabbit/prod install"
    )]
    Install,
    /// Compare broker and topology; read-only.
    #[command(
        after_long_help = "Exit codes: 0 healthy (warnings allowed unless --strict), \
        1 drift, defects or a failed probe, 2 bad input, 3 broker unusable.\n\nExample:\n  \
        delaytopo verify -q --strict"
    )]
    Verify(VerifyArgs),
    /// Show what install would create and teardown would remove; read-only.
    #[command(
        after_long_help = "Exit codes (as kubectl diff): 0 nothing to do, 1 changes \
        pending, 2 bad input, 3 broker unusable.\n\nExample:\n  delaytopo plan"
    )]
    Plan,
    /// Unbind and delete the cascade; keeps delayed messages safe.
    #[command(
        after_long_help = "Safety: counts every level queue over AMQP and the \
        management API, stops inflow by deleting the level exchanges, counts again, and \
        puts everything back and refuses if any delayed message is there. It refuses before \
        any change when a level has no quorum or an alarm fires. Endpoint queues and \
        exchanges are never deleted.\n\nExit codes: 0 removed (or nothing to remove), \
        1 refused (messages held, no quorum, cancelled), 2 bad input, 3 broker unusable, \
        130/143 interrupted (what it removed is put back).\n\nExample:\n  \
        delaytopo teardown --unbind-only"
    )]
    Teardown(TeardownArgs),
    /// Print the cascade as a RabbitMQ definitions document (no broker needed).
    Render,
    /// Send one delayed message through the cascade and time its arrival.
    #[command(after_long_help = "A late probe message goes to the permanent queue \
        delaytopo.probe.sink, never into a jam.\n\nExit codes: 0 arrived in time, 1 late, \
        early or lost, 2 bad input, 3 broker unusable.\n\nExample:\n  \
        delaytopo probe --delay 4 --margin 2")]
    Probe(ProbeArgs),
    /// Move delayed messages from another cascade (e.g. v1) into this one.
    Migrate(MigrateArgs),
    /// Move delayed messages from this broker's cascade to another broker.
    Transfer(TransferArgs),
    /// Print the least permissions each command needs for this topology.
    Permissions(PermissionsArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct PermissionsArgs {
    /// Commands to cover (install, verify, plan, teardown, probe, migrate,
    /// transfer); all when none is named.
    #[arg(value_name = "COMMAND")]
    pub commands: Vec<String>,
    /// The user the rabbitmqctl lines are written for.
    #[arg(long, default_value = "delaytopo")]
    pub user: String,
    /// migrate's source topology, whose queues migrate reads.
    #[arg(long, value_name = "PATH")]
    pub from: Option<std::path::PathBuf>,
    /// The poison queue of migrate and transfer.
    #[arg(long, default_value = "delaytopo.poison")]
    pub poison_queue: String,
}

#[derive(Debug, Args)]
pub struct TeardownArgs {
    /// Remove the bindings only; keep exchanges, queues and messages.
    #[arg(long)]
    pub unbind_only: bool,
    /// Delete even when level queues hold delayed messages (they are discarded);
    /// with --unbind-only, unbind even queues that would drop expiring messages.
    #[arg(long)]
    pub force: bool,
    /// With --force: do not ask for confirmation on a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Delay of the probe message, in seconds.
    #[arg(long, default_value_t = 2)]
    pub delay: u64,
    /// How late the probe may arrive before it counts as failed, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub margin: f64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Treat warnings as failures (exit 1).
    #[arg(long)]
    pub strict: bool,
    /// Also send a probe message through the cascade.
    #[arg(long)]
    pub probe: bool,
    /// One line per vhost: the verdict and its counts.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub probe_args: ProbeArgs,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Count and classify messages without moving anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Queue for messages that cannot be moved, with the reason in a header.
    #[arg(long, default_value = "delaytopo.poison")]
    pub poison_queue: String,
    /// Messages in flight at once (unacknowledged at the source, unconfirmed
    /// at the target): more is faster over long round trips, and uses more memory.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Directory of the journals that let a re-run skip what an interrupted
    /// run already landed (one file per source and target vhost; removed
    /// once the source is empty).
    #[arg(long, value_name = "DIR", default_value = "delaytopo-journal")]
    pub journal: std::path::PathBuf,
    /// Keep no journal (whatever --journal says): a re-run after a crash
    /// may land again what the crashed run had landed.
    #[arg(long)]
    pub no_journal: bool,
    /// Publish through the target cascade's staging queues (quorum cascades,
    /// with a journal): a killed run's unconfirmed publishes are then found
    /// there, never landed twice; slower, see the README.
    #[arg(long)]
    pub staging: bool,
    /// How long to keep reconnecting, with backoff, while a broker is down
    /// (a restart), or publishing again while the target refuses messages,
    /// before giving up with exit 3.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reconnect_for: u64,
    /// The target's `max_message_size` in bytes, when it is not its version's
    /// default (16 MiB from RabbitMQ 4.0, 128 MiB before): larger messages
    /// stay in their source queue.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=536_870_912))]
    pub max_message_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Topology of the cascade to drain (the -f topology is the target).
    #[arg(long, value_name = "PATH")]
    pub from: PathBuf,
    #[command(flatten)]
    pub moving: MoveArgs,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// AMQP URI of the broker to move the messages to; repeat it (or
    /// separate with commas) for its cluster's nodes, tried in order.
    #[arg(long, value_name = "AMQP_URI", value_delimiter = ',', required = true)]
    pub to_url: Vec<String>,
    /// Management API of the target broker: one, or one per --to-url.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub to_management_url: Vec<String>,
    /// Password file for the target broker; DELAYTOPO_TO_PASSWORD may hold
    /// the password itself.
    #[arg(
        long,
        env = "DELAYTOPO_TO_PASSWORD_FILE",
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub to_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for the target broker, instead of the system store.
    #[arg(
        long,
        env = "DELAYTOPO_TO_TLS_CA_CERT_FILE",
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub to_tls_ca_cert_file: Option<PathBuf>,
    /// PEM client certificate for the target broker.
    #[arg(
        long,
        env = "DELAYTOPO_TO_TLS_CERT_FILE",
        hide_env_values = true,
        value_name = "PATH",
        requires = "to_tls_key_file"
    )]
    pub to_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the target broker's client certificate.
    #[arg(
        long,
        env = "DELAYTOPO_TO_TLS_KEY_FILE",
        hide_env_values = true,
        value_name = "PATH",
        requires = "to_tls_cert_file"
    )]
    pub to_tls_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub moving: MoveArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
