//! Running one statement: what kind of result it returns, prepared or unnamed.

use futures_util::TryStreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

use crate::Error;

/// What a statement returns.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Rows,
    One,
    Opt,
    Count,
}

#[derive(Debug)]
pub(super) enum Out {
    Rows(Vec<Row>),
    One(Row),
    Opt(Option<Row>),
    Count(u64),
}

impl Out {
    /// Rows returned (or, for a count, affected).
    pub(super) fn row_count(&self) -> u64 {
        match self {
            Out::Rows(r) => r.len() as u64,
            Out::One(_) => 1,
            Out::Opt(r) => u64::from(r.is_some()),
            Out::Count(n) => *n,
        }
    }

    fn mismatch() -> Error {
        Error::Invalid("internal: a statement returned another kind of result".into())
    }
    pub(super) fn rows(self) -> Result<Vec<Row>, Error> {
        match self {
            Out::Rows(r) => Ok(r),
            _ => Err(Self::mismatch()),
        }
    }
    pub(super) fn one(self) -> Result<Row, Error> {
        match self {
            Out::One(r) => Ok(r),
            _ => Err(Self::mismatch()),
        }
    }
    pub(super) fn opt(self) -> Result<Option<Row>, Error> {
        match self {
            Out::Opt(r) => Ok(r),
            _ => Err(Self::mismatch()),
        }
    }
    pub(super) fn count(self) -> Result<u64, Error> {
        match self {
            Out::Count(n) => Ok(n),
            _ => Err(Self::mismatch()),
        }
    }
}

/// Runs an unnamed statement with known parameter types (one request).
pub(super) async fn run_typed(
    client: &Client,
    sql: &str,
    typed: &[(&(dyn ToSql + Sync), Type)],
    op: Op,
) -> Result<Out, tokio_postgres::Error> {
    Ok(match op {
        Op::Rows => Out::Rows(client.query_typed(sql, typed).await?),
        Op::One => Out::One(client.query_typed_one(sql, typed).await?),
        Op::Opt => Out::Opt(client.query_typed_opt(sql, typed).await?),
        Op::Count => {
            let stream = client
                .query_typed_raw(sql, typed.iter().map(|(v, t)| (*v, t.clone())))
                .await?;
            futures_util::pin_mut!(stream);
            while stream.try_next().await?.is_some() {}
            Out::Count(stream.rows_affected().unwrap_or(0))
        }
    })
}

/// Runs a prepared statement.
pub(super) async fn run_prepared(
    client: &Client,
    stmt: &Statement,
    params: &[&(dyn ToSql + Sync)],
    op: Op,
) -> Result<Out, tokio_postgres::Error> {
    Ok(match op {
        Op::Rows => Out::Rows(client.query(stmt, params).await?),
        Op::One => Out::One(client.query_one(stmt, params).await?),
        Op::Opt => Out::Opt(client.query_opt(stmt, params).await?),
        Op::Count => Out::Count(client.execute(stmt, params).await?),
    })
}
