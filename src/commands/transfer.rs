//! `transfer --to-url <amqp-uri>`: moves the delayed messages of this
//! broker's cascade into the same cascade on another broker (created there
//! if missing), each with the delay it has left. With one vhost, the target
//! vhost is the one in `--to-url`; with several (`--vhost`), each goes to the
//! vhost of the same name on the target broker.

use anyhow::Result;

use crate::cascade::Desired;
use crate::cli::TransferArgs;
use crate::commands::fanout::each_target;
use crate::context::Context;
use crate::exit::bad_input;
use crate::failover;
use crate::moving::{self, Job, Side};
use crate::report::Outcome;
use crate::target::{self, mask, Target};
use crate::topology::BrokerSection;

pub async fn run(context: &Context, args: &TransferArgs) -> Result<Outcome> {
    moving::check_poison_queue(&args.moving.poison_queue)?;
    let destination = destination_broker(context, args)?;
    let several = context.targets.len() > 1;
    each_target(context, |broker, source| {
        let to = if several {
            destination.with_vhost(&broker.vhost)
        } else {
            destination.clone()
        };
        let target = Desired::new(&context.topology, &to.vhost);
        let mut job = Job::new(
            "transfer",
            Side {
                broker,
                cascade: source,
            },
            Side {
                broker: to,
                cascade: target,
            },
            &args.moving,
            moving::progress(context),
        );
        job.refuse_same_vhost = true;
        async move {
            // The target's first node that answers, as for the source.
            job.to.broker = failover::reachable(job.to.broker.clone()).await?;
            moving::run(&job).await
        }
    })
    .await
}

/// The target broker from `--to-url` and `--to-management-url` alone: nothing
/// of the source's broker settings carries over.
fn destination_broker(context: &Context, args: &TransferArgs) -> Result<Target> {
    for to_url in &args.to_url {
        match url::Url::parse(to_url) {
            Ok(url) if matches!(url.scheme(), "amqp" | "amqps") => {}
            _ => {
                return Err(bad_input(format!(
                    "--to-url: `{}` is not an amqp:// or amqps:// URI",
                    mask(to_url)
                )))
            }
        }
    }
    let mut topology = context.topology.clone();
    topology.broker = BrokerSection::default();
    let mut targets = target::resolve(
        &topology,
        &target::Overrides {
            url: &args.to_url,
            management_url: &args.to_management_url,
            access: target::Access::given(
                "to-",
                target::GivenFiles {
                    password_file: &args.to_password_file,
                    tls_ca_cert_file: &args.to_tls_ca_cert_file,
                    tls_cert_file: &args.to_tls_cert_file,
                    tls_key_file: &args.to_tls_key_file,
                },
            ),
            vhosts: &[],
            timeout_seconds: context.timeout.as_secs_f64(),
        },
    )?;
    Ok(targets.remove(0))
}
