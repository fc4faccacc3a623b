//! `supamount status` through a real mount: a file being written shows as pending with its
//! bytes, and is gone from the status once closed.

#[macro_use]
mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_supamount");

fn status(m: &Mount) -> serde_json::Value {
    let out = run_timeout(
        Command::new(BIN).args(["status", "--json"]).arg(&m.path),
        Duration::from_secs(10),
    );
    assert!(out.ok(), "supamount status failed: {out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn pending_upload_shows_until_closed() {
    let b = Backend::local("status_pending");
    let m = b.mount();
    let mut file = std::fs::File::create(m.p("slow.bin")).unwrap();
    file.write_all(&vec![7u8; 3 * 1024 * 1024]).unwrap();
    let during = status(&m);
    assert_eq!(during["bucket"], b.bucket.as_str());
    assert_eq!(during["credentials"], "access keys");
    assert_eq!(during["pending_uploads"], 1);
    assert_eq!(during["pending_bytes"], 3 * 1024 * 1024);
    close_checked(file).unwrap();
    // close() returns once the upload is done; release follows asynchronously.
    poll_until(
        Duration::from_secs(10),
        "the upload to leave the status",
        || {
            let after = status(&m);
            after["pending_uploads"] == 0 && after["open_files"] == 0
        },
    );
}
