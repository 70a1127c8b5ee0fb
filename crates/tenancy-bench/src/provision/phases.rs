//! The phases of the provisioning benchmark: the floors (connect, create, clone), the
//! sequential and sustained runs, the warm pool's refill wait, and the checks that every
//! measured tenant is active and its storage complete.

use super::*;

/// PostgreSQL's own cost of what the storage steps do, on the same cluster, outside the
/// engine: medians in ms of `reps` runs each.
pub(super) struct Floors {
    /// CREATE SCHEMA + the app's 20 tables and indexes, one transaction, one round trip.
    pub(super) ddl_ms: f64,
    /// The same plus `tenancy.make_tenant_table` on every table, the USAGE grant and the
    /// version comment: what `storage::migrate_schema`'s general path sends, without the
    /// engine.
    pub(super) ddl_tenant_tables_ms: f64,
    /// `storage::create_schema_fast`, what the engine runs for a new schema tenant: the
    /// same objects from generated DDL in one round trip, without the engine.
    pub(super) ddl_generated_ms: f64,
    /// `CREATE DATABASE` from the default template (PostgreSQL's default strategy).
    pub(super) create_database_ms: f64,
}

pub(super) async fn floors(cluster: &Cluster, reps: usize) -> Result<Floors> {
    let app = AppMigrations::generated(TABLES);
    let ddl: String = app.after(0).map(|m| format!("{};\n", m.sql)).collect();
    let owner = tenancy_pg::connect(&cluster.config_as(OWNER_ROLE, CATALOG_DB)).await?;
    let su = cluster.connect("postgres").await?;
    let mut owner_mut = tenancy_pg::connect(&cluster.config_as(OWNER_ROLE, CATALOG_DB)).await?;
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..reps {
        let s = format!("floor_raw_{i}");
        let sql = format!("BEGIN; CREATE SCHEMA {s}; SET LOCAL search_path = {s};\n{ddl} COMMIT;");
        let t = Instant::now();
        owner.batch_execute(&sql).await.context("floor: raw DDL")?;
        a.push(t.elapsed().as_secs_f64() * 1000.0);

        let s = format!("floor_tt_{i}");
        let sql = format!(
            "BEGIN; CREATE SCHEMA {s}; SET LOCAL search_path = {s};\n{ddl}
             SELECT tenancy.make_tenant_table(c.oid::regclass) FROM pg_class c
              WHERE c.relnamespace = '{s}'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.oid;
             GRANT USAGE ON SCHEMA {s} TO tenancy_app;
             COMMENT ON SCHEMA {s} IS 'tenancy-app-version:1'; COMMIT;"
        );
        let t = Instant::now();
        owner
            .batch_execute(&sql)
            .await
            .context("floor: DDL with tenant tables")?;
        b.push(t.elapsed().as_secs_f64() * 1000.0);

        let s = format!("floor_gen_{i}");
        let t = Instant::now();
        tenancy_provision::storage::create_schema_fast(&mut owner_mut, &s, &app)
            .await
            .context("floor: generated tenant-table DDL")?;
        d.push(t.elapsed().as_secs_f64() * 1000.0);

        let t = Instant::now();
        su.batch_execute(&format!("CREATE DATABASE floor_db_{i}"))
            .await
            .context("floor: CREATE DATABASE")?;
        c.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for i in 0..reps {
        owner
            .batch_execute(&format!(
                "DROP SCHEMA floor_raw_{i} CASCADE; DROP SCHEMA floor_tt_{i} CASCADE; DROP SCHEMA floor_gen_{i} CASCADE"
            ))
            .await?;
        su.batch_execute(&format!("DROP DATABASE floor_db_{i}"))
            .await?;
    }
    Ok(Floors {
        ddl_ms: percentile(&sorted(a), 0.5),
        ddl_tenant_tables_ms: percentile(&sorted(b), 0.5),
        ddl_generated_ms: percentile(&sorted(d), 0.5),
        create_database_ms: percentile(&sorted(c), 0.5),
    })
}

/// Provisions `n` tenants one at a time, timing each from the request to active.
pub(super) async fn sequential(
    p: &Provisioner,
    catalog: &mut Client,
    placement: Placement,
    prefix: &str,
    n: usize,
    pool: Option<&PoolWait>,
) -> Result<Vec<Sample>> {
    let mut rx = p.subscribe();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(pool) = pool {
            pool.full().await?;
        }
        let req = request(&format!("{prefix}-{i:05}"), placement)?;
        let started = Instant::now();
        let (_, wf) = p
            .provision(catalog, &req, "signup")
            .await
            .context("signing up a tenant")?;
        let signup_ms = started.elapsed().as_secs_f64() * 1000.0;
        let status = loop {
            match tokio::time::timeout(WORKFLOW_TIMEOUT, rx.recv()).await {
                Ok(Ok(f)) if f.workflow == wf.id => break f.status,
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => bail!("the provisioner stopped"),
                Err(_) => bail!(
                    "workflow {} did not finish within {WORKFLOW_TIMEOUT:?}",
                    wf.id
                ),
            }
        };
        let total_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status != WorkflowStatus::Succeeded {
            bail!(
                "provisioning {} ended {status}: {:?}",
                req.tenant.slug,
                tenancy_catalog::workflow_steps(catalog, wf.id).await?
            );
        }
        out.push(Sample {
            workflow: wf.id,
            signup_ms,
            total_ms,
        });
    }
    Ok(out)
}

/// Waits until the warm pool is full (spare schemas in the shared database, complete
/// spare databases of the current template), polling every 2 ms.
pub(super) struct PoolWait {
    /// Superuser connection to the shared database.
    pub(super) shared: Client,
    /// Superuser connection to the maintenance database.
    pub(super) maintenance: Client,
    /// Tag of a complete spare database of this engine.
    pub(super) tag: String,
    pub(super) size: WarmPool,
}

impl PoolWait {
    pub(super) async fn full(&self) -> Result<()> {
        let deadline = Instant::now() + WORKFLOW_TIMEOUT;
        loop {
            let schemas = storage::spare_schemas(&self.shared).await?.len();
            let dbs = storage::spare_databases(&self.maintenance)
                .await?
                .iter()
                .filter(|(_, of)| of.as_deref() == Some(self.tag.as_str()))
                .count();
            if schemas >= self.size.schemas && dbs >= self.size.databases {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the warm pool is not full after {WORKFLOW_TIMEOUT:?} ({schemas} schemas, {dbs} databases)");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

pub(super) struct Sustained {
    pub(super) samples: Vec<Sample>,
    pub(super) per_s: f64,
    pub(super) wall_s: f64,
}

/// Queues `n` signups back to back and waits for all of them to be active.
pub(super) async fn sustained_batch(
    p: &Provisioner,
    catalog: &mut Client,
    placement: Placement,
    n: usize,
    prefix: &str,
) -> Result<Sustained> {
    let mut rx = p.subscribe();
    let collector = tokio::spawn(async move {
        let mut done: HashMap<Uuid, (Instant, WorkflowStatus)> = HashMap::new();
        while done.len() < n {
            match rx.recv().await {
                Ok(f) => {
                    done.insert(f.workflow, (Instant::now(), f.status));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
        done
    });
    let first = Instant::now();
    let mut started = Vec::with_capacity(n);
    for i in 0..n {
        let req = request(&format!("{prefix}-{i:05}"), placement)?;
        let t0 = Instant::now();
        let (_, wf) = p
            .provision(catalog, &req, "signup")
            .await
            .context("signing up a tenant")?;
        started.push((wf.id, t0, t0.elapsed().as_secs_f64() * 1000.0));
    }
    let limit = WORKFLOW_TIMEOUT + Duration::from_secs(n as u64);
    let done = tokio::time::timeout(limit, collector)
        .await
        .with_context(|| format!("the batch did not finish within {limit:?}"))?
        .context("collecting finished workflows")?;
    let mut samples = Vec::with_capacity(n);
    let mut last = first;
    for (id, t0, signup_ms) in started {
        let Some((at, status)) = done.get(&id) else {
            bail!("workflow {id} never finished");
        };
        if *status != WorkflowStatus::Succeeded {
            bail!("workflow {id} ended {status}");
        }
        last = last.max(*at);
        samples.push(Sample {
            workflow: id,
            signup_ms,
            total_ms: at.duration_since(t0).as_secs_f64() * 1000.0,
        });
    }
    let wall_s = last.duration_since(first).as_secs_f64();
    Ok(Sustained {
        per_s: n as f64 / wall_s,
        wall_s,
        samples,
    })
}

/// Every measured tenant is `active` in the catalog.
pub(super) async fn verify_active(catalog: &Client, samples: &[Sample]) -> Result<()> {
    let ids: Vec<Uuid> = samples.iter().map(|s| s.workflow).collect();
    let active: i64 = catalog
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.workflows w JOIN tenancy_catalog.tenants t ON t.id = w.tenant_id
              WHERE w.id = ANY($1) AND t.state = 'active'",
            &[&ids],
        )
        .await
        .context("counting active tenants")?
        .get(0);
    anyhow::ensure!(
        active == ids.len() as i64,
        "{active} of {} tenants are active",
        ids.len()
    );
    Ok(())
}

/// Schema tenants have their 20 tables (RLS forced); dedicated databases exist.
pub(super) async fn verify_storage(cluster: &Cluster, catalog: &Client) -> Result<()> {
    let schemas: i64 = catalog
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.tenants WHERE placement = 'schema' AND state = 'active'",
            &[],
        )
        .await?
        .get(0);
    let tables: i64 = catalog
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname ~ '^t_[0-9a-f]{32}$' AND c.relkind = 'r' AND c.relforcerowsecurity",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        tables == schemas * TABLES as i64,
        "{schemas} schema tenants but {tables} forced-RLS tables in tenant schemas"
    );
    let dedicated: i64 = catalog
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.tenants WHERE placement = 'dedicated' AND state = 'active'",
            &[],
        )
        .await?
        .get(0);
    let su = cluster.connect("postgres").await?;
    let dbs: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname ~ '^tenant_[0-9a-f]{32}$'",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        dbs == dedicated,
        "{dedicated} dedicated tenants but {dbs} tenant databases"
    );
    Ok(())
}

/// Step durations of a set of workflows, from the engine's step log.
pub(super) struct StepLog {
    /// (workflow, step) → ms of the successful attempt.
    pub(super) ms: HashMap<(Uuid, String), f64>,
    /// Attempts that were not `ok`.
    pub(super) failed_attempts: i64,
}

pub(super) async fn step_log(catalog: &Client, samples: &[Sample]) -> Result<StepLog> {
    let ids: Vec<Uuid> = samples.iter().map(|s| s.workflow).collect();
    let rows = catalog
        .query(
            "SELECT workflow_id, step, ms, outcome FROM tenancy_catalog.workflow_steps
              WHERE workflow_id = ANY($1) AND NOT compensation",
            &[&ids],
        )
        .await
        .context("reading the step log")?;
    let mut ms = HashMap::new();
    let mut failed_attempts = 0;
    for r in rows {
        let outcome: String = r.get(3);
        if outcome == "ok" {
            ms.insert(
                (r.get::<_, Uuid>(0), r.get::<_, String>(1)),
                r.get::<_, f64>(2),
            );
        } else {
            failed_attempts += 1;
        }
    }
    Ok(StepLog {
        ms,
        failed_attempts,
    })
}

impl StepLog {
    pub(super) fn step(&self, samples: &[Sample], step: &str) -> Vec<f64> {
        sorted(
            samples
                .iter()
                .filter_map(|s| self.ms.get(&(s.workflow, step.to_owned())).copied()),
        )
    }

    pub(super) fn outside(&self, samples: &[Sample]) -> Vec<f64> {
        sorted(samples.iter().map(|s| {
            let in_steps: f64 = STEPS
                .iter()
                .filter_map(|st| self.ms.get(&(s.workflow, (*st).to_owned())))
                .sum();
            s.total_ms - in_steps
        }))
    }

    pub(super) fn to_json(&self, samples: &[Sample]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for st in STEPS {
            let v = self.step(samples, st);
            m.insert(
                st.into(),
                json!({"p50": round2(percentile(&v, 0.5)), "p99": round2(percentile(&v, 0.99)), "mean": round2(mean(&v))}),
            );
        }
        let o = self.outside(samples);
        m.insert(
            "outside_steps".into(),
            json!({"p50": round2(percentile(&o, 0.5)), "p99": round2(percentile(&o, 0.99)), "mean": round2(mean(&o))}),
        );
        let signup = sorted(samples.iter().map(|s| s.signup_ms));
        m.insert(
            "signup_request".into(),
            json!({"p50": round2(percentile(&signup, 0.5)), "p99": round2(percentile(&signup, 0.99)), "mean": round2(mean(&signup))}),
        );
        m.insert("failed_attempts".into(), json!(self.failed_attempts));
        serde_json::Value::Object(m)
    }

    pub(super) fn print(&self, label: &str, samples: &[Sample]) {
        let mut line = format!("  {label:<10}");
        for st in STEPS {
            let v = self.step(samples, st);
            line.push_str(&format!(
                " {st} {:.1}/{:.1}",
                percentile(&v, 0.5),
                percentile(&v, 0.99)
            ));
        }
        let o = self.outside(samples);
        line.push_str(&format!(
            " | outside {:.1}/{:.1}",
            percentile(&o, 0.5),
            percentile(&o, 0.99)
        ));
        if self.failed_attempts > 0 {
            line.push_str(&format!(" | {} failed attempts", self.failed_attempts));
        }
        println!("{line}");
    }
}
