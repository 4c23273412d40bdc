//! Notifications of changes ([`ChangeListener`], Postgres `LISTEN`).

use super::{StoreError, StoreResult, CHANGE_CHANNEL};
use sqlx::postgres::{PgListener, PgPool};

/// A subscription to [`CHANGE_CHANNEL`] on a connection of its own ([`super::Store::listen`]).
pub struct ChangeListener {
    listener: PgListener,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").field("channel", &CHANGE_CHANNEL).finish_non_exhaustive()
    }
}

impl ChangeListener {
    pub(super) async fn connect(pool: &PgPool) -> StoreResult<ChangeListener> {
        let ctx = format!("listen on `{CHANGE_CHANNEL}`");
        let mut listener = PgListener::connect_with(pool).await.map_err(StoreError::db(&ctx))?;
        listener.listen(CHANGE_CHANNEL).await.map_err(StoreError::db(&ctx))?;
        Ok(ChangeListener { listener })
    }

    /// The next notification's payload: a feature name (that feature changed), an empty
    /// string (a change of no feature, e.g. a policy activation: re-read everything), or
    /// what [`super::Store::notify`] sent (e.g. `policy_uploaded:<sha256>`).
    ///
    /// `Ok(None)`: the connection was lost, and notifications sent meanwhile are lost with
    /// it — re-read whatever may have changed; the next call reconnects and listens again
    /// (or drop the listener and [`super::Store::listen`] anew). `Err`: reconnecting failed.
    pub async fn recv(&mut self) -> StoreResult<Option<String>> {
        let received =
            self.listener.try_recv().await.map_err(StoreError::db(format!("listen on `{CHANGE_CHANNEL}`")))?;
        Ok(received.map(|n| n.payload().to_owned()))
    }
}
