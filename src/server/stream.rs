//! Moving object data between HTTP bodies and files without holding it in memory.
//!
//! Uploads: the async side forwards body chunks through a small bounded channel to a writer on
//! the blocking pool, which hashes and writes them to a temporary file. Downloads: a reader on
//! the blocking pool sends file chunks through a bounded channel that the response body drains.
//! Either way at most a few chunks per request are in memory, and a slow peer slows the disk
//! side down instead of filling memory.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use s3s::dto::StreamingBlob;
use s3s::stream::{ByteStream, RemainingLength};
use tokio::sync::mpsc;

use super::disk::{IoContext, StoreError, COPY_BUFFER};

/// Body chunks queued between the request and the writer.
const WRITE_QUEUE: usize = 8;
/// Writes to the temporary file are batched to this size.
const WRITE_BUFFER: usize = 1 << 20;
/// Size of the chunks a download sends, and how many may wait for the client.
const READ_CHUNK: usize = 256 * 1024;
const READ_QUEUE: usize = 4;

/// A complete file in `.tmp/`, removed when dropped unless it was moved into place.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    md5: String,
    size: u64,
    armed: bool,
}

impl TempFile {
    pub(crate) fn new(path: PathBuf, md5: String, size: u64) -> TempFile {
        TempFile {
            path,
            md5,
            size,
            armed: true,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Hex MD5 of the content.
    pub(crate) fn md5(&self) -> &str {
        &self.md5
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Records the digest and length once the content is complete.
    pub(crate) fn complete(mut self, md5: String, size: u64) -> TempFile {
        self.md5 = md5;
        self.size = size;
        self
    }

    /// The file has been renamed into place: it is no longer ours to remove.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Only on error paths: a single unlink, cheap enough to run wherever the drop happens.
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

enum Chunk {
    Data(Bytes),
    /// The body ended normally; without it the writer treats a closed channel as an abort.
    End,
}

/// Streams `body` into a new file at `path`, hashing it; refuses bodies above `limit` bytes.
pub(crate) async fn write_body(
    path: PathBuf,
    body: Option<StreamingBlob>,
    limit: Option<u64>,
) -> Result<TempFile, StoreError> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let writer_path = path.clone();
    let writer = tokio::task::spawn_blocking(move || write_chunks(&writer_path, rx));

    let forwarded = match body {
        Some(body) => forward(body, &tx, limit).await,
        None => Ok(()),
    };
    if forwarded.is_ok() {
        // A failed send means the writer stopped; its own error is reported below.
        let _ = tx.send(Chunk::End).await;
    }
    drop(tx);

    let written = writer.await.unwrap_or_else(|join| {
        Err(StoreError::Io {
            context: "the body writer did not finish".into(),
            source: io::Error::other(join),
        })
    });
    let (md5, size) = match (forwarded, written) {
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(done)) => done,
    };
    Ok(TempFile::new(path, md5, size))
}

async fn forward(
    mut body: StreamingBlob,
    tx: &mpsc::Sender<Chunk>,
    limit: Option<u64>,
) -> Result<(), StoreError> {
    let mut total: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(StoreError::Body)?;
        total += chunk.len() as u64;
        if let Some(limit) = limit.filter(|&limit| total > limit) {
            return Err(StoreError::TooLarge { limit });
        }
        if tx.send(Chunk::Data(chunk)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The blocking half of [`write_body`]. Removes its file unless the body ended normally.
fn write_chunks(path: &Path, mut rx: mpsc::Receiver<Chunk>) -> Result<(String, u64), StoreError> {
    let file = File::create_new(path).ctx("create", path)?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut md5 = Md5::new();
    let mut size: u64 = 0;
    let outcome = loop {
        match rx.blocking_recv() {
            Some(Chunk::Data(bytes)) => {
                md5.update(&bytes);
                size += bytes.len() as u64;
                if let Err(e) = out.write_all(&bytes) {
                    break Err(e);
                }
            }
            Some(Chunk::End) => break out.flush(),
            None => {
                break Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "request body abandoned",
                ))
            }
        }
    };
    drop(out);
    if let Err(e) = outcome {
        let _ = fs::remove_file(path);
        return Err(e).ctx("write", path);
    }
    Ok((hex::encode(md5.finalize()), size))
}

/// Copies an open file into a new temporary file at `path`, hashing it (blocking).
pub(crate) fn copy_to_temp(mut source: File, path: PathBuf) -> Result<TempFile, StoreError> {
    let file = File::create_new(&path).ctx("create", &path)?;
    // Armed from the start, so that a failed copy leaves nothing behind.
    let temp = TempFile::new(path, String::new(), 0);
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut md5 = Md5::new();
    let size =
        copy_hashing(&mut source, &mut out, &mut [&mut md5]).ctx("copy into", temp.path())?;
    out.flush().ctx("write", temp.path())?;
    Ok(temp.complete(hex::encode(md5.finalize()), size))
}

/// Copies all of `src` into `dst`, feeding every byte to each of `digests`. Returns the length.
pub(crate) fn copy_hashing(
    src: &mut impl Read,
    dst: &mut impl Write,
    digests: &mut [&mut Md5],
) -> io::Result<u64> {
    let mut buf = vec![0; COPY_BUFFER];
    let mut total: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for digest in digests.iter_mut() {
            digest.update(&buf[..n]);
        }
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// A GET response body: `len` bytes of a file from `start`, read on the blocking pool.
pub(crate) struct FileStream {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
}

impl FileStream {
    pub(crate) fn spawn(file: File, start: u64, len: u64) -> FileStream {
        let (tx, rx) = mpsc::channel(READ_QUEUE);
        tokio::task::spawn_blocking(move || read_chunks(file, start, len, &tx));
        FileStream { rx, remaining: len }
    }
}

/// The blocking half of [`FileStream`]; stops early when the client goes away.
fn read_chunks(mut file: File, start: u64, len: u64, tx: &mpsc::Sender<io::Result<Bytes>>) {
    if let Err(e) = file.seek(SeekFrom::Start(start)) {
        let _ = tx.blocking_send(Err(e));
        return;
    }
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
        let mut buf = vec![0; want];
        let chunk = match file.read(&mut buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object shorter than its size",
            )),
            Ok(n) => {
                buf.truncate(n);
                left -= n as u64;
                Ok(Bytes::from(buf))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
        let failed = chunk.is_err();
        if tx.blocking_send(chunk).is_err() || failed {
            return;
        }
    }
}

impl Stream for FileStream {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
        }
        polled.map(|item| item.map(|chunk| chunk.map_err(|e| Box::new(e) as s3s::StdError)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, None)
    }
}

impl ByteStream for FileStream {
    fn remaining_length(&self) -> RemainingLength {
        usize::try_from(self.remaining)
            .map_or_else(|_| RemainingLength::unknown(), RemainingLength::new_exact)
    }
}
