//! `seal_open`: sealing and opening a 1 KB field through `tenancy_keys::Keyring` (inside a
//! `TenantTx`, the tenant's data key cached) against AES-256-GCM alone (RustCrypto
//! `aes-gcm`, the same cipher and key size, a random 96-bit nonce from the same OS source,
//! no associated data), same process, same run.
//!
//! What ours adds: the keyring's cache lookups (current data-key version, unwrapped key),
//! the associated data (tenant, table, column, row key) and the versioned header. The
//! database is read only while warming up (the data key is then cached).
//!
//! Timing: batches of `BATCH` seal+open pairs, timed as a whole, ours and the baseline
//! alternating batch by batch; the per-pair time of each batch is a sample. Reported: the
//! median of samples per run, medians over runs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{Context, Result};
use rand::RngCore;
use serde_json::json;
use tenancy_core::TenantId;
use tenancy_keys::{FieldRef, Keyring, LocalKeyProvider};
use tenancy_sdk::bootstrap::OWNER_ROLE;

use crate::report::Report;
use crate::setup::{Env, DB};
use crate::tenant_tx::ours_pool;

const FIELD_BYTES: usize = 1024;
const BATCH: usize = 256;
const BATCHES: usize = 400;

/// The middle value (the upper one of an even count).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One AES-256-GCM seal (random nonce) and open, as an application would without tenancy.
fn baseline_pair(cipher: &Aes256Gcm, plaintext: &[u8]) -> Result<usize> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .context("random nonce")?;
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .map_err(|_| anyhow::anyhow!("baseline encryption failed"))?;
    let pt = cipher
        .decrypt(Nonce::from_slice(&nonce), ct.as_slice())
        .map_err(|_| anyhow::anyhow!("baseline decryption failed"))?;
    Ok(pt.len())
}

/// Runs the benchmark `runs` times and writes `target/bench/seal_open.json`.
pub(crate) async fn run(env: &Env, runs: usize) -> Result<()> {
    println!(
        "== seal_open: seal + open of a 1 KB field (Keyring in a TenantTx) vs AES-256-GCM alone"
    );
    let owner = tenancy_pg::connect(&env.cluster.config_as(OWNER_ROLE, DB))
        .await
        .context("connecting as tenancy_owner")?;
    tenancy_keys::install(&owner)
        .await
        .context("installing the data-key table")?;
    let dir = std::env::temp_dir().join(format!("tenancy-bench-keys-{}", std::process::id()));
    let provider = LocalKeyProvider::open(&dir).context("the key directory")?;
    let ring = Keyring::new(Arc::new(provider));
    let pool = ours_pool(env, 1)?;
    let tenant = TenantId::from_uuid(env.tenants[0]).context("tenant id")?;
    ring.create_keys(&pool, tenant)
        .await
        .context("creating the tenant's keys")?;
    let mut tx = pool.begin(tenant).await.context("begin")?;
    let field = FieldRef::new("items", "secret", "42")?;
    let plaintext = vec![0x5au8; FIELD_BYTES];
    let mut key = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .context("baseline key")?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));

    let (mut ours_runs, mut base_runs) = (Vec::new(), Vec::new());
    // Run 0 warms up (loads the data key into the cache) and is not reported.
    for r in 0..=runs {
        let (mut o, mut b) = (Vec::with_capacity(BATCHES), Vec::with_capacity(BATCHES));
        for _ in 0..BATCHES {
            let start = Instant::now();
            for _ in 0..BATCH {
                let sealed = ring.seal(&mut tx, &field, black_box(&plaintext)).await?;
                let opened = ring.open(&mut tx, &field, black_box(&sealed)).await?;
                black_box(opened.len());
            }
            o.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
            let start = Instant::now();
            for _ in 0..BATCH {
                black_box(baseline_pair(&cipher, black_box(&plaintext))?);
            }
            b.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        }
        if r == 0 {
            continue;
        }
        let (om, bm) = (median(&o), median(&b));
        println!("  run {r}/{runs}: ours {om:.0} ns, AES-256-GCM alone {bm:.0} ns per seal+open");
        ours_runs.push(om);
        base_runs.push(bm);
    }
    tx.rollback().await.context("rollback")?;
    let _ = std::fs::remove_dir_all(&dir);
    let ours = median(&ours_runs);
    let baseline = median(&base_runs);
    let report = Report {
        name: "seal_open".into(),
        unit: "ns per seal + open of a 1 KB field (median of per-batch means; lower is better; ratio = baseline / ours, > 1 means we are faster)".into(),
        ours,
        baseline,
        baseline_name: "aes-gcm 0.10 Aes256Gcm encrypt + decrypt, random nonce, no associated data".into(),
        ratio: baseline / ours,
        params: json!({
            "runs": runs,
            "field_bytes": FIELD_BYTES,
            "batch": BATCH,
            "batches_per_run": BATCHES,
            "ours_ns_per_run": ours_runs,
            "baseline_ns_per_run": base_runs,
            "cpus": std::thread::available_parallelism().map_or(0, usize::from),
            "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "target": "ratio >= 0.80",
        }),
    };
    let path = report.write()?;
    println!(
        "seal_open: ours {ours:.0} ns, AES-256-GCM alone {baseline:.0} ns, ratio {:.2} → {}",
        report.ratio,
        path.display()
    );
    Ok(())
}
