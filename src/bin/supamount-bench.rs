//! The benchmark's helper: seeds the test bucket through the S3 API, measures the raw-SDK
//! ceiling that the FUSE mounts are compared with, and renders the results table.
//!
//! Driven by `bench/run.sh`; each measuring subcommand prints one `key=value ...` line on
//! stdout for the script to parse. Keys come from `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`, never from arguments (other users can read those).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use futures::stream::{self, StreamExt, TryStreamExt};

/// Part size of ranged GETs and multipart uploads: what supamount uses, and a common default.
const PART: u64 = 8 << 20;

#[derive(Parser)]
#[command(
    name = "supamount-bench",
    about = "S3 ceiling and helpers for bench/run.sh"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Conn {
    /// S3 endpoint, e.g. http://127.0.0.1:PORT.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    bucket: Option<String>,
    #[arg(long, default_value = "local")]
    region: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Put COUNT objects PREFIX00000.. of SIZE bytes concurrently, and optionally one big
    /// random object.
    Seed {
        #[command(flatten)]
        conn: Conn,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        count: usize,
        #[arg(long, default_value_t = 4096)]
        size: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Key of one big random object (multipart, 8 MiB parts).
        #[arg(long, requires = "big_size")]
        big_key: Option<String>,
        #[arg(long)]
        big_size: Option<u64>,
    },
    /// Read whole objects with ranged GETs of 8 MiB, CONCURRENCY in flight per object; several
    /// --key read at once. Reports the aggregate MB/s and this process's peak RSS.
    Get {
        #[command(flatten)]
        conn: Conn,
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// ListObjectsV2 (delimiter `/`, as a directory listing does) of PREFIX, all pages.
    List {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        prefix: String,
    },
    /// Multipart upload of SIZE random bytes, CONCURRENCY 8 MiB parts in flight. The data is
    /// generated before the clock starts.
    Put {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        #[arg(long)]
        size: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// COUNT sequential PutObjects of SIZE bytes (as a loop of file creates does).
    SmallPuts {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 4096)]
        size: u64,
    },
    /// Sequential whole-object GETs of every key under PREFIX (as `cat dir/*` does).
    SmallGets {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        prefix: String,
    },
    /// COUNT sequential ranged GETs of SIZE bytes at random SIZE-aligned offsets of KEY (as
    /// random reads through a filesystem are), after one untimed HEAD.
    RandomGets {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 4096)]
        size: u64,
    },
    /// Sequential DeleteObjects of every key under PREFIX (as `rm -r` does), after one
    /// untimed listing.
    Deletes {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        prefix: String,
    },
    /// The least an S3 client without server-side append must do to append APPEND bytes to
    /// KEY: read it (ranged GETs) and upload old + new data again (multipart).
    Append {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 1 << 20)]
        append: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Render the results file written by run.sh as a markdown table.
    Report {
        /// Tab-separated lines: workload, tool, run, kind (mbps|secs|rss|net|fail), value.
        results: PathBuf,
        /// Lines printed under the table.
        #[arg(long = "note")]
        notes: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Report { results, notes } = &cli.command {
        print!("{}", report(results, notes)?);
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli.command))
}

async fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Seed {
            conn,
            prefix,
            count,
            size,
            concurrency,
            big_key,
            big_size,
        } => {
            let (client, bucket) = connect(&conn).await?;
            let start = Instant::now();
            stream::iter(0..count)
                .map(|i| {
                    let (client, bucket) = (client.clone(), bucket.clone());
                    let key = format!("{prefix}{i:05}");
                    async move {
                        let body = random_bytes(size, i as u64);
                        put_object(&client, &bucket, &key, body).await
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .try_collect::<()>()
                .await?;
            if let (Some(key), Some(size)) = (big_key, big_size) {
                multipart_put(&client, &bucket, &key, random_bytes(size, 7), 8).await?;
            }
            println!("objects={count} seconds={:.3}", secs(start));
        }
        Cmd::Get {
            conn,
            keys,
            concurrency,
        } => {
            let (client, bucket) = connect(&conn).await?;
            // Sizes first, untimed: a filesystem learns them from its lookup, before reading.
            let mut sizes = Vec::new();
            for key in &keys {
                let head = client.head_object().bucket(&bucket).key(key).send().await;
                let head = head.with_context(|| format!("HEAD {key}"))?;
                sizes.push(head.content_length().unwrap_or(0).max(0) as u64);
            }
            let start = Instant::now();
            let reads = keys
                .iter()
                .zip(&sizes)
                .map(|(key, &size)| ranged_get(&client, &bucket, key, size, concurrency, false));
            let got: u64 = futures::future::try_join_all(reads)
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .sum();
            let t = secs(start);
            let want: u64 = sizes.iter().sum();
            if got != want {
                bail!("read {got} bytes, expected {want}");
            }
            println!(
                "bytes={got} seconds={t:.3} mbps={:.1} peak_rss_mib={:.1}",
                got as f64 / 1e6 / t,
                peak_rss_mib()
            );
        }
        Cmd::RandomGets {
            conn,
            key,
            count,
            size,
        } => {
            let (client, bucket) = connect(&conn).await?;
            let head = client.head_object().bucket(&bucket).key(&key).send().await;
            let total = head
                .with_context(|| format!("HEAD {key}"))?
                .content_length();
            let slots = (total.unwrap_or(0).max(0) as u64 / size.max(1)).max(1);
            // A fixed xorshift sequence: every run reads the same offsets.
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            let start = Instant::now();
            let mut got = 0u64;
            for _ in 0..count {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let first = (state % slots) * size;
                let out = client
                    .get_object()
                    .bucket(&bucket)
                    .key(&key)
                    .range(format!("bytes={first}-{}", first + size - 1))
                    .send()
                    .await
                    .with_context(|| format!("GET {key} at {first}"))?;
                got += out.body.collect().await?.into_bytes().len() as u64;
            }
            println!("bytes={got} seconds={:.3}", secs(start));
        }
        Cmd::List { conn, prefix } => {
            let (client, bucket) = connect(&conn).await?;
            let start = Instant::now();
            let mut pages = client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(&prefix)
                .delimiter("/")
                .into_paginator()
                .send();
            let mut entries = 0usize;
            while let Some(page) = pages.next().await {
                let page = page.context("ListObjectsV2")?;
                entries += page.contents().len() + page.common_prefixes().len();
            }
            println!("entries={entries} seconds={:.3}", secs(start));
        }
        Cmd::Put {
            conn,
            key,
            size,
            concurrency,
        } => {
            let (client, bucket) = connect(&conn).await?;
            let data = random_bytes(size, 11);
            let start = Instant::now();
            multipart_put(&client, &bucket, &key, data, concurrency).await?;
            let t = secs(start);
            println!(
                "bytes={size} seconds={t:.3} mbps={:.1}",
                size as f64 / 1e6 / t
            );
        }
        Cmd::SmallPuts {
            conn,
            prefix,
            count,
            size,
        } => {
            let (client, bucket) = connect(&conn).await?;
            let bodies: Vec<Bytes> = (0..count).map(|i| random_bytes(size, i as u64)).collect();
            let start = Instant::now();
            for (i, body) in bodies.into_iter().enumerate() {
                put_object(&client, &bucket, &format!("{prefix}{i:05}"), body).await?;
            }
            println!("objects={count} seconds={:.3}", secs(start));
        }
        Cmd::SmallGets { conn, prefix } => {
            let (client, bucket) = connect(&conn).await?;
            let start = Instant::now();
            // The listing is timed too: `cat dir/*` needs the shell's glob (readdir) as well.
            let keys = list_keys(&client, &bucket, &prefix).await?;
            let mut bytes = 0u64;
            for key in &keys {
                let out = client.get_object().bucket(&bucket).key(key).send().await;
                let out = out.with_context(|| format!("GET {key}"))?;
                bytes += out.body.collect().await?.into_bytes().len() as u64;
            }
            println!(
                "objects={} bytes={bytes} seconds={:.3}",
                keys.len(),
                secs(start)
            );
        }
        Cmd::Deletes { conn, prefix } => {
            let (client, bucket) = connect(&conn).await?;
            let keys = list_keys(&client, &bucket, &prefix).await?;
            let start = Instant::now();
            for key in &keys {
                let out = client.delete_object().bucket(&bucket).key(key).send().await;
                out.with_context(|| format!("DELETE {key}"))?;
            }
            println!("objects={} seconds={:.3}", keys.len(), secs(start));
        }
        Cmd::Append {
            conn,
            key,
            append,
            concurrency,
        } => {
            let (client, bucket) = connect(&conn).await?;
            let extra = random_bytes(append, 13);
            let start = Instant::now();
            let head = client.head_object().bucket(&bucket).key(&key).send().await;
            let size = head.with_context(|| format!("HEAD {key}"))?;
            let size = size.content_length().unwrap_or(0).max(0) as u64;
            let (_, old) = ranged_get(&client, &bucket, &key, size, concurrency, true).await?;
            let mut whole = Vec::with_capacity((size + append) as usize);
            whole.extend_from_slice(&old);
            whole.extend_from_slice(&extra);
            multipart_put(&client, &bucket, &key, Bytes::from(whole), concurrency).await?;
            println!("bytes={} seconds={:.3}", size + append, secs(start));
        }
        Cmd::Report { .. } => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}

async fn connect(conn: &Conn) -> Result<(Client, String)> {
    let endpoint = conn.endpoint.clone().context("--endpoint is required")?;
    let bucket = conn.bucket.clone().context("--bucket is required")?;
    let id = std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set")?;
    let secret =
        std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY is not set")?;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(conn.region.clone()))
        .credentials_provider(Credentials::new(id, secret, None, None, "environment"))
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .force_path_style(true)
        // As supamount does: checksums the server ignores would only cost CPU and, for
        // streaming bodies, force aws-chunked encoding that Supabase caps.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Ok((Client::from_conf(config), bucket))
}

async fn put_object(client: &Client, bucket: &str, key: &str, body: Bytes) -> Result<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .with_context(|| format!("PUT {key}"))?;
    Ok(())
}

/// Upload `data` as `key`: one PutObject up to one part, else multipart with 8 MiB parts
/// (in-memory bodies: Supabase caps aws-chunked streaming chunks).
async fn multipart_put(
    client: &Client,
    bucket: &str,
    key: &str,
    data: Bytes,
    concurrency: usize,
) -> Result<()> {
    if data.len() as u64 <= PART {
        return put_object(client, bucket, key, data).await;
    }
    let create = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("CreateMultipartUpload {key}"))?;
    let upload_id = create.upload_id().context("no upload id")?.to_string();
    let parts = data.len().div_ceil(PART as usize);
    let uploaded = stream::iter(0..parts)
        .map(|i| {
            let body = data.slice(i * PART as usize..((i + 1) * PART as usize).min(data.len()));
            let number = i as i32 + 1;
            let upload_id = upload_id.clone();
            async move {
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .with_context(|| format!("UploadPart {number} of {key}"))?;
                Ok::<_, anyhow::Error>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                )
            }
        })
        .buffered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await;
    let parts = match uploaded {
        Ok(parts) => parts,
        Err(e) => {
            // Leave no unfinished upload behind on the server.
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
    };
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .with_context(|| format!("CompleteMultipartUpload {key}"))?;
    Ok(())
}

/// Read `size` bytes of `key` in 8 MiB ranges, `concurrency` in flight. Returns the byte
/// count, and the data itself only when `keep` (a pure read benchmark drops each part, as
/// `dd of=/dev/null` does).
async fn ranged_get(
    client: &Client,
    bucket: &str,
    key: &str,
    size: u64,
    concurrency: usize,
    keep: bool,
) -> Result<(u64, Vec<u8>)> {
    let ranges = (0..size.div_ceil(PART)).map(|i| (i * PART, ((i + 1) * PART).min(size) - 1));
    let mut parts = stream::iter(ranges)
        .map(|(first, last)| async move {
            let out = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(format!("bytes={first}-{last}"))
                .send()
                .await
                .with_context(|| format!("GET {key} bytes {first}-{last}"))?;
            let data = out.body.collect().await?.into_bytes();
            if data.len() as u64 != last - first + 1 {
                bail!("GET {key} bytes {first}-{last}: {} bytes", data.len());
            }
            Ok(data)
        })
        .buffered(concurrency.max(1));
    let mut total = 0u64;
    let mut kept = Vec::new();
    while let Some(part) = parts.next().await {
        let part = part?;
        total += part.len() as u64;
        if keep {
            kept.extend_from_slice(&part);
        }
    }
    Ok((total, kept))
}

async fn list_keys(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<String>> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.context("ListObjectsV2")?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
    }
    Ok(keys)
}

/// Incompressible bytes from a fast generator (splitmix64): `/dev/urandom` would dominate the
/// seeding time, and a cryptographic quality is of no use here.
fn random_bytes(size: u64, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(size as usize + 8);
    while (out.len() as u64) < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(size as usize);
    Bytes::from(out)
}

fn secs(start: Instant) -> f64 {
    start
        .elapsed()
        .as_secs_f64()
        .max(Duration::from_micros(1).as_secs_f64())
}

/// This process's VmHWM, so the ceiling's memory can stand beside the mounts'.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Tools in the order of the table's columns; the first is what the ratios refer to.
const TOOLS: [&str; 4] = ["ceiling", "supamount", "s3fs", "rclone"];

enum Cell {
    Values(Vec<f64>),
    Fail(String),
}

/// The markdown table: one row per workload (in the order first seen), one column per tool,
/// each figure the median of its runs with its ratio to the ceiling.
fn report(path: &PathBuf, notes: &[String]) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut order: Vec<(String, String)> = Vec::new();
    let mut cells: BTreeMap<(String, String), Cell> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        let [workload, tool, _run, kind, value] = f[..] else {
            bail!("malformed results line: {line:?}");
        };
        if !order.iter().any(|(w, _)| w == workload) {
            order.push((workload.to_string(), String::new()));
        }
        let entry = order.iter_mut().find(|(w, _)| w == workload).unwrap();
        let cell = cells
            .entry((workload.to_string(), tool.to_string()))
            .or_insert(Cell::Values(Vec::new()));
        if kind == "fail" {
            // One failed run makes the figure meaningless; keep the first reason.
            if !matches!(cell, Cell::Fail(_)) {
                *cell = Cell::Fail(value.to_string());
            }
            continue;
        }
        entry.1 = kind.to_string();
        if let Cell::Values(v) = cell {
            v.push(
                value
                    .parse()
                    .with_context(|| format!("bad value in {line:?}"))?,
            );
        }
    }
    let mut out = String::new();
    out.push_str("| workload | unit |");
    for t in TOOLS {
        out.push_str(&format!(" {t} |"));
    }
    out.push_str("\n| --- | --- |");
    out.push_str(&" ---: |".repeat(TOOLS.len()));
    out.push('\n');
    for (workload, kind) in &order {
        let unit = match kind.as_str() {
            "mbps" => "MB/s",
            "secs" => "s",
            "rss" => "MiB",
            "net" => "MiB sent",
            _ => "",
        };
        let ceiling = match cells.get(&(workload.clone(), TOOLS[0].to_string())) {
            Some(Cell::Values(v)) if !v.is_empty() => Some(median(v)),
            _ => None,
        };
        out.push_str(&format!("| {workload} | {unit} |"));
        for tool in TOOLS {
            let text = match cells.get(&(workload.clone(), tool.to_string())) {
                None => "–".to_string(),
                Some(Cell::Fail(why)) => format!("fail: {}", why.replace('|', "/")),
                Some(Cell::Values(v)) if v.is_empty() => "–".to_string(),
                Some(Cell::Values(v)) => {
                    let m = median(v);
                    let figure = match kind.as_str() {
                        "secs" if m < 10.0 => format!("{m:.2}"),
                        _ => format!("{m:.1}"),
                    };
                    // Ratios read as "fraction of the ceiling's speed" for rates and times
                    // alike (1.00 = as fast, 0.25 = four times slower); memory and bytes
                    // sent are plain multiples.
                    let ratio = match (kind.as_str(), ceiling) {
                        (_, None) => None,
                        (_, Some(c)) if c <= 0.0 || m <= 0.0 => None,
                        ("secs", Some(c)) => Some(c / m),
                        (_, Some(c)) => Some(m / c),
                    };
                    match ratio {
                        Some(r) if tool != TOOLS[0] => format!("{figure} ({r:.2})"),
                        _ => figure,
                    }
                }
            };
            out.push_str(&format!(" {text} |"));
        }
        out.push('\n');
    }
    for note in notes {
        out.push_str(&format!("\n{note}"));
    }
    if !notes.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
