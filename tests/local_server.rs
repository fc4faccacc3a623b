//! Tests of the local S3 server (`supamount::server`) through aws-sdk-s3, on 127.0.0.1 port 0.
//!
//! Each test starts its own server on its own temporary data directory. The expectations are
//! the Supabase Storage server's answers (DESIGN.md, "Supabase Storage facts"), since the same
//! end-to-end suite runs against both.

use std::collections::BTreeSet;
use std::path::Path;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use aws_sdk_s3::Client;
use futures::StreamExt;
use md5::{Digest, Md5};
use supamount::server::{LocalServer, ServerConfig, ServerLimits};
use tempfile::TempDir;

const KEY_ID: &str = "local-test-key";
const SECRET: &str = "local-test-secret";
const REGION: &str = "local";
const BUCKET: &str = "test";
const MIB: usize = 1 << 20;

/// A server on a fresh data directory, and a client with the right keys.
struct Harness {
    dir: TempDir,
    server: LocalServer,
    client: Client,
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with(ServerLimits::default()).await
    }

    async fn start_with(limits: ServerLimits) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = LocalServer::start_with_limits(config(&dir.path().join("data")), limits)
            .await
            .expect("server starts");
        let client = client(&server.endpoint(), KEY_ID, SECRET, REGION);
        Harness {
            dir,
            server,
            client,
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    async fn put(&self, key: &str, body: impl Into<Vec<u8>>) {
        self.client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(body.into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key:?}: {}", describe(&e)));
    }

    async fn get(&self, key: &str) -> Vec<u8> {
        let out = self
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {key:?}: {}", describe(&e)));
        out.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .to_vec()
    }

    /// Every key and common prefix of a listing, page by page.
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: i32,
    ) -> Vec<Listed> {
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_owned))
                .max_keys(max_keys)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("list: {}", describe(&e)));
            let mut page = Listed::default();
            for object in out.contents() {
                assert!(
                    object.e_tag().is_some_and(|t| t.starts_with('"')),
                    "ETag on {object:?}"
                );
                assert!(object.size().is_some(), "Size on {object:?}");
                assert!(
                    object.last_modified().is_some(),
                    "LastModified on {object:?}"
                );
                page.names.push(object.key().expect("key").to_owned());
            }
            page.names.extend(
                out.common_prefixes()
                    .iter()
                    .map(|p| p.prefix().expect("prefix").to_owned()),
            );
            page.truncated = out.is_truncated() == Some(true);
            token = out.next_continuation_token().map(str::to_owned);
            pages.push(page);
            if !pages.last().is_some_and(|p| p.truncated) {
                return pages;
            }
            assert!(
                token.is_some(),
                "a truncated page carries a continuation token"
            );
        }
    }
}

#[derive(Debug, Default)]
struct Listed {
    names: Vec<String>,
    truncated: bool,
}

fn config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data_dir.to_path_buf(),
        access_key_id: KEY_ID.into(),
        secret_access_key: SECRET.into(),
        region: REGION.into(),
        buckets: vec![BUCKET.into()],
    }
}

fn client(endpoint: &str, key_id: &str, secret: &str, region: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "local-test"))
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// HTTP status and S3 error code of a failed call (0 when no response came back).
fn status_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> (u16, Option<String>) {
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    (status, err.code().map(str::to_owned))
}

fn describe<E: std::fmt::Debug>(e: &E) -> String {
    format!("{e:?}")
}

/// Deterministic bytes with no short period, so that a misplaced block shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

#[tokio::test]
async fn signatures_are_checked() {
    let h = Harness::start().await;
    h.put("probe", "x").await;
    let endpoint = h.server.endpoint();

    let wrong_secret = client(&endpoint, KEY_ID, "not-the-secret", REGION);
    let err = wrong_secret
        .head_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(status_code(&err).0, 403);
    let err = wrong_secret
        .get_object()
        .bucket(BUCKET)
        .key("probe")
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(
        status_code(&err),
        (403, Some("SignatureDoesNotMatch".into()))
    );

    let unknown_key = client(&endpoint, "someone-else", SECRET, REGION);
    let err = unknown_key
        .get_object()
        .bucket(BUCKET)
        .key("probe")
        .send()
        .await
        .expect_err("unknown key id");
    assert_eq!(status_code(&err), (403, Some("AccessDenied".into())));

    let other_region = client(&endpoint, KEY_ID, SECRET, "eu-central-1");
    let err = other_region
        .get_object()
        .bucket(BUCKET)
        .key("probe")
        .send()
        .await
        .expect_err("region");
    assert_eq!(
        status_code(&err),
        (403, Some("SignatureDoesNotMatch".into()))
    );

    let us_east = client(&endpoint, KEY_ID, SECRET, "us-east-1");
    us_east
        .head_object()
        .bucket(BUCKET)
        .key("probe")
        .send()
        .await
        .expect("us-east-1 is accepted");
}

#[tokio::test]
async fn key_charset_follows_supabase() {
    let h = Harness::start().await;
    let refused = [
        "caf\u{e9}.txt",
        "100%",
        "a~b",
        "a#b",
        "[x]",
        "{x}",
        "a^b",
        "a|b",
        "a\\b",
        "a\"b",
        "a<b>",
        "a`b",
        "tab\there",
        "",
    ];
    for key in refused {
        let err = h
            .client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await;
        let err = err.expect_err(key);
        if !key.is_empty() {
            assert_eq!(
                status_code(&err),
                (400, Some("InvalidKey".into())),
                "{key:?}"
            );
        }
        let err = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect_err(key);
        assert_ne!(status_code(&err).0, 200, "{key:?}");
    }

    let accepted = "dir/a b+c=d@e;f:g$h&i'j(k)l!m*n,o?p_q-r.s";
    h.put(accepted, "ok").await;
    assert_eq!(h.get(accepted).await, b"ok");
    let listed = h.list_pages("", None, 1000).await;
    assert_eq!(listed[0].names, [accepted]);
    assert!(
        h.data_dir().join(BUCKET).join(accepted).is_file(),
        "stored under its own name"
    );
}

#[tokio::test]
async fn folder_marker_becomes_placeholder() {
    let h = Harness::start().await;
    h.put("dir/", Vec::new()).await;

    let listed = h.list_pages("", None, 1000).await;
    assert_eq!(listed[0].names, ["dir/.emptyFolderPlaceholder"]);
    let with_delimiter = h.list_pages("", Some("/"), 1000).await;
    assert_eq!(with_delimiter[0].names, ["dir/"]);
    assert!(h
        .data_dir()
        .join(BUCKET)
        .join("dir/.emptyFolderPlaceholder")
        .is_file());

    let err = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("dir/")
        .send()
        .await
        .expect_err("HEAD dir/");
    assert_eq!(status_code(&err).0, 404);
    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("dir")
        .send()
        .await
        .expect_err("GET dir");
    assert_eq!(status_code(&err), (404, Some("NoSuchKey".into())));

    let err = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key("full/")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await;
    assert_eq!(
        status_code(&err.expect_err("data under dir/")),
        (400, Some("InvalidKey".into()))
    );
}

/// 2,500 objects and 1,200 sub-prefixes in one directory, in pages of 1000: every name once, in
/// byte order across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_3700_entries_in_pages() {
    let h = Harness::start().await;
    let mut keys: Vec<String> = (0..2500).map(|i| format!("big/f{i:04}")).collect();
    keys.extend((0..1200).map(|i| format!("big/d{i:04}/inner")));
    let client = h.client.clone();
    futures::stream::iter(keys.clone())
        .map(|key| {
            let client = client.clone();
            async move {
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .body(ByteStream::from_static(b"v"))
                    .send()
                    .await
            }
        })
        .buffer_unordered(32)
        .for_each(|put| async move {
            put.expect("put");
        })
        .await;

    let pages = h.list_pages("big/", Some("/"), 5000).await;
    assert_eq!(
        pages.iter().map(|p| p.names.len()).collect::<Vec<_>>(),
        [1000, 1000, 1000, 700]
    );
    assert!(pages[..3].iter().all(|p| p.truncated) && !pages[3].truncated);
    let names: Vec<String> = pages.into_iter().flat_map(|p| p.names_in_order()).collect();
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "byte order, no duplicates across pages"
    );
    let expected: BTreeSet<String> = (0..2500)
        .map(|i| format!("big/f{i:04}"))
        .chain((0..1200).map(|i| format!("big/d{i:04}/")))
        .collect();
    assert_eq!(names.into_iter().collect::<BTreeSet<_>>(), expected);

    let flat: Vec<String> = h
        .list_pages("big/", None, 1000)
        .await
        .into_iter()
        .flat_map(|p| p.names)
        .collect();
    keys.sort();
    assert_eq!(flat, keys, "without a delimiter: every key, sorted");
}

impl Listed {
    /// Contents and CommonPrefixes come as two lists; S3's order interleaves them by name.
    fn names_in_order(mut self) -> Vec<String> {
        self.names.sort();
        self.names
    }
}

#[tokio::test]
async fn byte_order_puts_slash_after_dash_and_space_first() {
    let h = Harness::start().await;
    for key in ["a0", "a/x", "a.txt", "a-b", "a b/x"] {
        h.put(key, "v").await;
    }
    let pages = h.list_pages("", Some("/"), 1).await;
    let names: Vec<String> = pages.into_iter().flat_map(|p| p.names).collect();
    assert_eq!(names, ["a b/", "a-b", "a.txt", "a/", "a0"]);

    let after = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .start_after("a-b")
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = after.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a.txt", "a/x", "a0"]);
}

#[tokio::test]
async fn ranges_and_invalid_range() {
    let h = Harness::start().await;
    h.put("six", "abcdef").await;
    let cases = [
        ("bytes=1-2", "bc", "bytes 1-2/6"),
        ("bytes=3-", "def", "bytes 3-5/6"),
        ("bytes=-2", "ef", "bytes 4-5/6"),
        ("bytes=3-100", "def", "bytes 3-5/6"),
        ("bytes=-100", "abcdef", "bytes 0-5/6"),
    ];
    for (range, body, content_range) in cases {
        let out = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key("six")
            .range(range)
            .send()
            .await
            .expect(range);
        assert_eq!(out.content_range(), Some(content_range), "{range}");
        assert_eq!(out.content_length(), Some(body.len() as i64), "{range}");
        assert_eq!(
            out.body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .as_ref(),
            body.as_bytes(),
            "{range}"
        );
    }
    for range in ["bytes=6-", "bytes=10-20"] {
        let err = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key("six")
            .range(range)
            .send()
            .await
            .expect_err(range);
        assert_eq!(
            status_code(&err),
            (416, Some("InvalidRange".into())),
            "{range}"
        );
    }
    let whole = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("six")
        .send()
        .await
        .expect("get");
    assert_eq!(whole.content_range(), None);
    assert_eq!(whole.e_tag(), Some(quoted_md5(b"abcdef").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multipart_round_trip() {
    let h = Harness::start().await;
    let parts: Vec<Vec<u8>> = (0..3).map(|i| pattern(5 * MIB, i + 1)).collect();
    let created = h
        .client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("multi/part.bin")
        .content_type("application/x-test")
        .metadata("Origin", "multipart")
        .send()
        .await
        .expect("create");
    let upload_id = created.upload_id().expect("upload id").to_owned();

    let listed = h
        .client
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list uploads");
    assert_eq!(listed.uploads().len(), 1);

    let mut completed = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let number = i as i32 + 1;
        let out = h
            .client
            .upload_part()
            .bucket(BUCKET)
            .key("multi/part.bin")
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("upload part");
        assert_eq!(out.e_tag(), Some(quoted_md5(data).as_str()));
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag().unwrap_or_default())
                .build(),
        );
    }

    let mut wrong = completed.clone();
    wrong[1] = CompletedPart::builder()
        .part_number(2)
        .e_tag(quoted_md5(b"other"))
        .build();
    let err = h
        .client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("multi/part.bin")
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(wrong))
                .build(),
        )
        .send()
        .await
        .expect_err("wrong part ETag");
    assert_eq!(status_code(&err), (400, Some("InvalidPart".into())));

    let done = h
        .client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key("multi/part.bin")
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    let whole = parts.concat();
    assert_eq!(
        done.e_tag(),
        Some(quoted_md5(&whole).as_str()),
        "MD5 of the content, as Supabase reports"
    );

    assert!(h.get("multi/part.bin").await == whole, "round trip");
    let head = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("multi/part.bin")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(15 * MIB as i64));
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("origin"))
            .map(String::as_str),
        Some("multipart")
    );

    let listed = h
        .client
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list uploads");
    assert!(listed.uploads().is_empty(), "a completed upload is gone");
    let err = h
        .client
        .upload_part()
        .bucket(BUCKET)
        .key("multi/part.bin")
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from_static(b"late"))
        .send()
        .await
        .expect_err("upload is finished");
    assert_eq!(status_code(&err), (404, Some("NoSuchUpload".into())));
}

#[tokio::test]
async fn multipart_abort_removes_parts() {
    let h = Harness::start().await;
    let created = h
        .client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key("gone")
        .send()
        .await
        .expect("create");
    let upload_id = created.upload_id().expect("upload id");
    h.client
        .upload_part()
        .bucket(BUCKET)
        .key("gone")
        .upload_id(upload_id)
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .expect("part");
    h.client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("gone")
        .upload_id(upload_id)
        .send()
        .await
        .expect("abort");
    let uploads_dir = h.data_dir().join(".uploads");
    assert_eq!(
        std::fs::read_dir(uploads_dir).expect("uploads dir").count(),
        0
    );
    let err = h
        .client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key("gone")
        .upload_id(upload_id)
        .send()
        .await;
    assert_eq!(
        status_code(&err.expect_err("aborted twice")),
        (404, Some("NoSuchUpload".into()))
    );
    let err = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("gone")
        .send()
        .await
        .expect_err("no object");
    assert_eq!(status_code(&err).0, 404);
}

#[tokio::test]
async fn copy_source_raw_or_encoded_with_a_space() {
    let h = Harness::start().await;
    h.put("a b.txt", "spaced").await;
    for (source, target) in [
        ("test/a b.txt", "copy 1.txt"),
        ("test/a%20b.txt", "copy 2.txt"),
    ] {
        let out = h
            .client
            .copy_object()
            .bucket(BUCKET)
            .key(target)
            .copy_source(source)
            .send()
            .await
            .unwrap_or_else(|e| panic!("copy from {source:?}: {}", describe(&e)));
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(str::to_owned);
        assert_eq!(etag, Some(quoted_md5(b"spaced")));
        assert_eq!(h.get(target).await, b"spaced");
    }
    let err = h
        .client
        .copy_object()
        .bucket(BUCKET)
        .key("x")
        .copy_source("test/missing")
        .send()
        .await;
    assert_eq!(
        status_code(&err.expect_err("missing source")),
        (404, Some("NoSuchKey".into()))
    );
}

#[tokio::test]
async fn metadata_copy_and_replace() {
    let h = Harness::start().await;
    h.client
        .put_object()
        .bucket(BUCKET)
        .key("doc")
        .content_type("text/plain")
        .metadata("Mode", "644")
        .body(ByteStream::from_static(b"content"))
        .send()
        .await
        .expect("put");
    let head = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("doc")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_type(), Some("text/plain"));
    assert_eq!(
        head.metadata()
            .and_then(|m| m.get("mode"))
            .map(String::as_str),
        Some("644"),
        "names lower-cased"
    );

    h.client
        .copy_object()
        .bucket(BUCKET)
        .key("doc-copy")
        .copy_source("test/doc")
        .send()
        .await
        .expect("copy");
    let copied = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("doc-copy")
        .send()
        .await
        .expect("head copy");
    assert_eq!(
        copied.content_type(),
        Some("text/plain"),
        "COPY keeps the metadata"
    );
    assert_eq!(
        copied
            .metadata()
            .and_then(|m| m.get("mode"))
            .map(String::as_str),
        Some("644")
    );

    h.client
        .copy_object()
        .bucket(BUCKET)
        .key("doc")
        .copy_source("test/doc")
        .metadata_directive(MetadataDirective::Replace)
        .content_type("application/json")
        .metadata("mode", "755")
        .metadata("uid", "1000")
        .send()
        .await
        .expect("copy onto itself");
    let replaced = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("doc")
        .send()
        .await
        .expect("get");
    assert_eq!(replaced.content_type(), Some("application/json"));
    let metadata = replaced.metadata().cloned().unwrap_or_default();
    assert_eq!(metadata.get("mode").map(String::as_str), Some("755"));
    assert_eq!(metadata.get("uid").map(String::as_str), Some("1000"));
    assert_eq!(replaced.e_tag(), Some(quoted_md5(b"content").as_str()));
    assert_eq!(
        replaced
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"content"
    );
}

#[tokio::test]
async fn object_and_folder_of_the_same_name_conflict() {
    let h = Harness::start().await;
    h.put("a", "file").await;
    let err = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key("a/b")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    let (status, code) = status_code(&err.expect_err("a is a file"));
    assert_eq!((status, code.as_deref()), (409, Some("KeyConflict")));

    h.put("d/e", "inner").await;
    let err = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key("d")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(status_code(&err.expect_err("d is a folder")).0, 409);
    assert_eq!(h.get("a").await, b"file", "nothing lost");
    assert_eq!(h.get("d/e").await, b"inner", "nothing lost");

    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("d/e")
        .send()
        .await
        .expect("delete");
    h.put("d", "now a file").await;
    assert_eq!(
        h.get("d").await,
        b"now a file",
        "the emptied folder gives way"
    );
}

#[tokio::test]
async fn data_survives_a_restart() {
    let h = Harness::start().await;
    h.client
        .put_object()
        .bucket(BUCKET)
        .key("keep/me.txt")
        .content_type("text/plain")
        .metadata("mtime", "1700000000")
        .body(ByteStream::from_static(b"persistent"))
        .send()
        .await
        .expect("put");
    let before = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("keep/me.txt")
        .send()
        .await
        .expect("head");
    let Harness { dir, server, .. } = h;
    server.shutdown().await;

    let server = LocalServer::start(config(&dir.path().join("data")))
        .await
        .expect("restart");
    let client = client(&server.endpoint(), KEY_ID, SECRET, REGION);
    let after = client
        .get_object()
        .bucket(BUCKET)
        .key("keep/me.txt")
        .send()
        .await
        .expect("get after restart");
    assert_eq!(after.e_tag(), before.e_tag());
    assert_eq!(after.last_modified(), before.last_modified());
    assert_eq!(after.content_type(), Some("text/plain"));
    assert_eq!(after.metadata(), before.metadata());
    assert_eq!(
        after
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        b"persistent"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn paths_never_escape_the_data_dir() {
    let h = Harness::start().await;
    // A file beside DATA_DIR and one inside it, which `..` keys would reach without the checks.
    std::fs::write(h.dir.path().join("outside"), b"secret").expect("write");
    std::fs::write(h.data_dir().join("inside"), b"hidden").expect("write");
    let keys = [
        "../escape",
        "a/../../escape",
        "a/./b",
        "a//b",
        "..",
        "./x",
        "/lead",
        "../../outside",
        "../inside",
    ];
    let invalid_key = (400, Some("InvalidKey".to_owned()));
    for key in keys {
        let put = h
            .client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from_static(b"x"));
        let err = put.send().await.expect_err(key);
        assert_eq!(status_code(&err), invalid_key, "PUT {key:?}");
        let err = h
            .client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect_err(key);
        assert_eq!(status_code(&err), invalid_key, "GET {key:?}");
        let err = h
            .client
            .delete_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect_err(key);
        assert_eq!(status_code(&err), invalid_key, "DELETE {key:?}");
    }
    assert!(!h.dir.path().join("escape").exists() && !h.data_dir().join("escape").exists());
    assert!(h.dir.path().join("outside").exists() && h.data_dir().join("inside").exists());
    let err = h
        .client
        .create_bucket()
        .bucket(".meta")
        .send()
        .await
        .expect_err("hidden bucket name");
    assert_eq!(status_code(&err).0, 400);
    let buckets = h.client.list_buckets().send().await.expect("list buckets");
    let names: Vec<&str> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, [BUCKET], "hidden directories are not buckets");
}

#[tokio::test]
async fn deletes_and_buckets() {
    let h = Harness::start().await;
    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("never-there")
        .send()
        .await
        .expect("missing key: 204");
    h.put("deep/er/file", "x").await;
    h.put("top", "y").await;
    h.client
        .delete_object()
        .bucket(BUCKET)
        .key("deep/er/file")
        .send()
        .await
        .expect("delete");
    assert!(
        !h.data_dir().join(BUCKET).join("deep").exists(),
        "emptied directories are removed"
    );
    assert!(h.data_dir().join(BUCKET).is_dir(), "not the bucket");

    let err = h
        .client
        .delete_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect_err("not empty");
    assert_eq!(status_code(&err), (409, Some("ResourceNotEmpty".into())));
    let gone = h
        .client
        .delete_objects()
        .bucket(BUCKET)
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("top")
                        .build()
                        .expect("id"),
                )
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("bad~key")
                        .build()
                        .expect("id"),
                )
                .build()
                .expect("delete"),
        )
        .send()
        .await
        .expect("delete objects");
    assert_eq!(gone.deleted().len(), 1);
    assert_eq!(
        gone.errors().first().and_then(|e| e.code()),
        Some("InvalidKey")
    );
    h.client
        .delete_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("empty bucket");
    let err = h
        .client
        .head_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect_err("deleted bucket");
    assert_eq!(status_code(&err).0, 404);

    h.client
        .create_bucket()
        .bucket("Other Bucket")
        .send()
        .await
        .expect("Supabase-style bucket name");
    let err = h
        .client
        .create_bucket()
        .bucket("Other Bucket")
        .send()
        .await
        .expect_err("exists");
    assert_eq!(status_code(&err).0, 409);
    let err = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .expect_err("no bucket");
    assert_eq!(status_code(&err), (404, Some("NoSuchBucket".into())));
}

#[tokio::test]
async fn unimplemented_operations_are_not_misrouted() {
    let h = Harness::start().await;
    h.put("tagged", "data").await;
    let tagging = aws_sdk_s3::types::Tagging::builder()
        .tag_set(
            aws_sdk_s3::types::Tag::builder()
                .key("k")
                .value("v")
                .build()
                .expect("tag"),
        )
        .build()
        .expect("tagging");
    let err = h
        .client
        .put_object_tagging()
        .bucket(BUCKET)
        .key("tagged")
        .tagging(tagging)
        .send()
        .await;
    assert_eq!(
        status_code(&err.expect_err("tagging")),
        (501, Some("NotImplemented".into()))
    );
    let err = h
        .client
        .delete_object_tagging()
        .bucket(BUCKET)
        .key("tagged")
        .send()
        .await;
    assert_eq!(status_code(&err.expect_err("tagging")).0, 501);
    assert_eq!(h.get("tagged").await, b"data", "object untouched");
}

#[tokio::test]
async fn size_limit_answers_413() {
    let h = Harness::start_with(ServerLimits {
        max_object_size: Some(MIB as u64),
    })
    .await;
    h.put("fits", vec![1; MIB]).await;
    let err = h
        .client
        .put_object()
        .bucket(BUCKET)
        .key("big")
        .body(ByteStream::from(vec![1; MIB + 1]))
        .send()
        .await;
    assert_eq!(
        status_code(&err.expect_err("too large")),
        (413, Some("EntityTooLarge".into()))
    );
    assert!(
        std::fs::read_dir(h.data_dir().join(".tmp"))
            .expect("tmp")
            .next()
            .is_none(),
        "no leftovers"
    );
}

/// One large body streamed in and out; the content, ETag and the listing agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_object_round_trip() {
    let h = Harness::start().await;
    let data = pattern(64 * MIB, 7);
    h.put("large.bin", data.clone()).await;
    let out = h
        .client
        .get_object()
        .bucket(BUCKET)
        .key("large.bin")
        .send()
        .await
        .expect("get");
    let etag = out.e_tag().map(str::to_owned);
    let last_modified = out.last_modified().copied();
    assert!(
        out.body.collect().await.expect("body").into_bytes() == data,
        "same bytes back"
    );
    assert_eq!(etag, Some(quoted_md5(&data)));

    let listed = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list");
    let entry = listed.contents().first().expect("listed");
    assert_eq!(entry.e_tag().map(str::to_owned), etag);
    assert_eq!(entry.size(), Some(data.len() as i64));
    assert_eq!(
        entry.last_modified().copied(),
        last_modified,
        "one Last-Modified for GET and List"
    );
    let on_disk = std::fs::metadata(h.data_dir().join(BUCKET).join("large.bin")).expect("file");
    assert_eq!(on_disk.len(), data.len() as u64);
}

/// A file put in DATA_DIR by hand is served, with an ETag computed from its content.
#[tokio::test]
async fn files_added_by_hand_are_served() {
    let h = Harness::start().await;
    let path = h.data_dir().join(BUCKET).join("manual/notes.txt");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, b"by hand").expect("write");
    std::fs::write(h.data_dir().join(BUCKET).join("bad~name"), b"skip").expect("write");
    let listed = h.list_pages("", None, 1000).await;
    assert_eq!(
        listed[0].names,
        ["manual/notes.txt"],
        "names that are not keys are skipped"
    );
    let out = h
        .client
        .head_object()
        .bucket(BUCKET)
        .key("manual/notes.txt")
        .send()
        .await
        .expect("head");
    assert_eq!(out.e_tag(), Some(quoted_md5(b"by hand").as_str()));
    assert_eq!(out.content_type(), Some("application/octet-stream"));
}

/// While one client overwrites a key, readers get the old or the new content whole, and the
/// ETag of each answer is that content's MD5.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_see_the_old_or_the_new_object() {
    let h = Harness::start().await;
    let versions: Vec<Vec<u8>> = (0..2).map(|i| pattern(MIB / 2, i + 10)).collect();
    h.put("flip", versions[0].clone()).await;

    let writer = {
        let (client, versions) = (h.client.clone(), versions.clone());
        tokio::spawn(async move {
            for round in 0..20 {
                let body = ByteStream::from(versions[round % 2].clone());
                let put = client.put_object().bucket(BUCKET).key("flip").body(body);
                put.send().await.expect("overwrite");
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (client, versions) = (h.client.clone(), versions.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    let out = client.get_object().bucket(BUCKET).key("flip").send().await;
                    let out = out.expect("read during overwrites");
                    let etag = out.e_tag().map(str::to_owned);
                    let body = out.body.collect().await.expect("body").into_bytes();
                    assert!(
                        versions.iter().any(|v| v[..] == body[..]),
                        "old or new, whole"
                    );
                    assert_eq!(etag, Some(quoted_md5(&body)), "metadata matches the data");
                }
            })
        })
        .collect();
    writer.await.expect("writer");
    for reader in readers {
        reader.await.expect("reader");
    }
    let tmp = h.data_dir().join(".tmp");
    assert_eq!(
        std::fs::read_dir(tmp).expect("tmp").count(),
        0,
        "no leftovers"
    );
}

/// `encoding-type=url` (used by the aws CLI) percent-encodes keys and prefixes.
#[tokio::test]
async fn url_encoded_listing() {
    let h = Harness::start().await;
    h.put("a b+c.txt", "v").await;
    h.put("dir x/inner", "v").await;
    let out = h
        .client
        .list_objects_v2()
        .bucket(BUCKET)
        .delimiter("/")
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a%20b%2Bc.txt"]);
    let prefixes: Vec<&str> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(prefixes, ["dir%20x/"]);
}

/// A second server on the same data directory is refused, and the first keeps working.
#[tokio::test]
async fn one_server_per_data_dir() {
    let h = Harness::start().await;
    let second = LocalServer::start(config(&h.data_dir())).await;
    let err = second.expect_err("the directory is in use");
    let message = format!("{:#}", anyhow::Error::from(err));
    assert!(message.contains("another local server"), "{message}");
    h.put("still-served", "yes").await;
    assert_eq!(h.get("still-served").await, b"yes");
}
