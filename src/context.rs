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
        let topology = Topology::load(&global.topology)?;
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
