//! `rollout whitelist add|remove ID…` and `rollout exclude add|remove ID…`.

use crate::cli::context::{apply, Ctx};
use crate::cli::output::history_note;
use crate::cli::CliResult;
use crate::input::values::{Reason, RepositoryRef};
use crate::service::operations::Operation;
use clap::Subcommand;

/// `whitelist` and `exclude` subcommands.
#[derive(Debug, Subcommand)]
pub enum ListEdit {
    /// Add repositories.
    Add {
        /// UUIDs or owner/name.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<RepositoryRef>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<Reason>,
    },
    /// Remove repositories.
    Remove {
        /// UUIDs or owner/name.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<RepositoryRef>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<Reason>,
    },
}

/// Which list.
#[derive(Debug, Clone, Copy)]
pub enum ListKind {
    /// `target_repositories`.
    Whitelist,
    /// `excluded_repositories`.
    Exclude,
}

/// Run a list edit.
pub async fn run(ctx: &Ctx, kind: ListKind, edit: ListEdit) -> CliResult {
    let (add, ids, reason) = match edit {
        ListEdit::Add { ids, reason } => (true, ids, reason),
        ListEdit::Remove { ids, reason } => (false, ids, reason),
    };
    let (what, operation) = match (kind, add) {
        (ListKind::Whitelist, true) => ("whitelist", Operation::WhitelistAdd(ids)),
        (ListKind::Whitelist, false) => ("whitelist", Operation::WhitelistRemove(ids)),
        (ListKind::Exclude, true) => ("exclusions", Operation::ExcludeAdd(ids)),
        (ListKind::Exclude, false) => ("exclusions", Operation::ExcludeRemove(ids)),
    };
    let feature = ctx.feature.clone();
    apply(ctx, operation, reason, |o| {
        let list = match kind {
            ListKind::Whitelist => &o.config.target_repositories,
            ListKind::Exclude => &o.config.excluded_repositories,
        };
        let mut text = format!("{what} of `{feature}`: {} now ({})", list.len(), history_note(o));
        for id in list {
            text.push_str("\n  ");
            text.push_str(id);
        }
        text
    })
    .await
}
