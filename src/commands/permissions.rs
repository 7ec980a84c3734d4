//! `permissions [COMMAND...]`: the least permissions each command needs for
//! this topology, as `rabbitmqctl` commands (text) or one object per command
//! (JSON). Offline: nothing here talks to a broker.

use anyhow::Result;
use serde_json::json;

use crate::cascade::Desired;
use crate::cli::PermissionsArgs;
use crate::context::Context;
use crate::exit::bad_input;
use crate::permissions::{grants, Extra};
use crate::report::Outcome;
use crate::topology::Topology;

pub fn run(context: &Context, args: &PermissionsArgs) -> Result<Outcome> {
    let (_, desired) = context.single();
    let source = match &args.from {
        Some(path) => Some(Desired::new(&Topology::load(path)?, &desired.vhost)),
        None => None,
    };
    let extra = Extra {
        migrate_source: source.as_ref(),
        poison_queue: &args.poison_queue,
    };
    let grants = grants(&args.commands, desired, &extra).map_err(bad_input)?;
    let vhosts: Vec<&str> = context
        .targets
        .iter()
        .map(|(t, _)| t.vhost.as_str())
        .collect();
    let mut text = String::new();
    for grant in &grants {
        text.push_str(&format!("# {}\n", grant.command));
        for vhost in &vhosts {
            text.push_str(&format!(
                "rabbitmqctl set_permissions -p {} {} {} {} {}\n",
                shell_quote(vhost),
                shell_quote(&args.user),
                shell_quote(&grant.configure),
                shell_quote(&grant.write),
                shell_quote(&grant.read)
            ));
        }
        text.push_str(&format!(
            "rabbitmqctl set_user_tags {} {}\n",
            shell_quote(&args.user),
            grant.tags.join(" ")
        ));
        for note in &grant.notes {
            text.push_str(&format!("#   {note}\n"));
        }
        text.push('\n');
    }
    if args.from.is_none() && args.commands.iter().any(|c| c == "migrate") {
        text.push_str("# migrate: give --from to include the source cascade's queues (read)\n");
    }
    Ok(Outcome::new(
        true,
        text.trim_end().to_string(),
        json!({ "vhosts": vhosts, "user": args.user, "commands": grants }),
    ))
}

/// Single quotes for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
