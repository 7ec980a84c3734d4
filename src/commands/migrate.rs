//! `migrate --from <topology>`: moves the delayed messages of another cascade
//! on the same broker (e.g. NServiceBus v1) into the `-f` topology's cascade,
//! each with the delay it has left.

use anyhow::Result;

use crate::cascade::Desired;
use crate::cli::MigrateArgs;
use crate::commands::fanout::each_target;
use crate::context::Context;
use crate::exit::bad_input;
use crate::moving::{self, Job, Side};
use crate::report::Outcome;
use crate::topology::Topology;

pub async fn run(context: &Context, args: &MigrateArgs) -> Result<Outcome> {
    moving::check_poison_queue(&args.moving.poison_queue)?;
    let source_topology = Topology::load(&args.from)?;
    if let Some((_, target)) = context.targets.first() {
        refuse_shared_queues(&Desired::new(&source_topology, &target.vhost), target)?;
    }
    each_target(context, |broker, target| {
        let source = Desired::new(&source_topology, &broker.vhost);
        let job = Job::new(
            "migrate",
            Side {
                broker: broker.clone(),
                cascade: source,
            },
            Side {
                broker,
                cascade: target,
            },
            &args.moving,
            moving::progress(context),
        );
        async move { moving::run(&job).await }
    })
    .await
}

/// Draining a level queue into a cascade that contains it would never end.
fn refuse_shared_queues(source: &Desired, target: &Desired) -> Result<()> {
    match source.queues.iter().find(|q| target.owns_queue(&q.name)) {
        Some(shared) => Err(bad_input(format!(
            "--from and -f both contain the level queue {}: migrate needs two different cascades",
            shared.name
        ))),
        None => Ok(()),
    }
}
