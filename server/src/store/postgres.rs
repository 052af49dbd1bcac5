//! PostgreSQL, for deployments that outgrow one machine: several server nodes
//! share one database. Reads and writes use one pool; PostgreSQL's row locks
//! keep per-chat seqs consecutive across nodes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreResult;
use super::sql::sql_store;

pub struct PgStore {
    writer: PgPool,
    reader: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("natter-server");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore {
            writer: pool.clone(),
            reader: pool,
        })
    }
}

sql_store!(PgStore, sqlx::Postgres);
