//! Everything a broker command needs, computed once from the command line and
//! the topology file before any connection is made.

use std::time::Duration;

use crate::cascade::Desired;
use crate::cli::{Global, Output};
use crate::progress::Progress;
use crate::target::{self, Target};
use crate::topology::Topology;

pub struct Context {
    pub topology: Topology,
    /// One per vhost, each with its own desired state.
    pub targets: Vec<(Target, Desired)>,
    pub output: Output,
    pub progress: Progress,
    pub concurrency: usize,
    pub timeout: Duration,
}

impl Context {
    /// Loads and validates everything; errors here exit 2.
    pub fn load(global: &Global) -> anyhow::Result<Context> {
        let topology = match &global.topology {
            Some(path) => Topology::load(path)?,
            None => default_topology()?,
        };
        Context::with_topology(global, topology)
    }

    pub fn with_topology(global: &Global, topology: Topology) -> anyhow::Result<Context> {
        let targets = target::resolve(
            &topology,
            &target::Overrides {
                url: &global.url,
                management_url: &global.management_url,
                access: target::Access::given(
                    "",
                    target::GivenFiles {
                        password_file: &global.access.password_file,
                        tls_ca_cert_file: &global.access.tls_ca_cert_file,
                        tls_cert_file: &global.access.tls_cert_file,
                        tls_key_file: &global.access.tls_key_file,
                    },
                ),
                vhosts: &global.vhosts,
                timeout_seconds: global.timeout,
            },
        )?;
        let timeout = targets[0].timeout;
        let targets = targets
            .into_iter()
            .map(|t| {
                let desired = Desired::new(&topology, &t.vhost);
                (t, desired)
            })
            .collect();
        Ok(Context {
            topology,
            targets,
            output: global.output,
            progress: Progress::new(global.no_progress, global.output != Output::Text),
            concurrency: usize::from(global.concurrency),
            timeout,
        })
    }

    /// The first target: commands that act on a single vhost use it.
    pub fn single(&self) -> &(Target, Desired) {
        &self.targets[0]
    }
}

/// The file when none is named: `topology.yaml` here, or, when there is
/// none (a binary installed anywhere), the NServiceBus v2 defaults an empty
/// file means, said once on stderr. A file named with -f must exist.
fn default_topology() -> anyhow::Result<Topology> {
    let path = std::path::Path::new(DEFAULT_TOPOLOGY);
    if path.exists() {
        return Ok(Topology::load(path)?);
    }
    eprintln!("note: no {DEFAULT_TOPOLOGY} here: using the NServiceBus v2 defaults (-f names a file)");
    Ok(Topology::parse(path, "")?)
}

const DEFAULT_TOPOLOGY: &str = "topology.yaml";
