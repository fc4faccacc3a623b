//! Multipart uploads: parts wait in `.uploads/<upload-id>/` until the upload completes.
//!
//! `upload.json` records the bucket, key and metadata given at creation; each part is the file
//! `part-NNNNN`, replaced whole if the part is sent again. Completion concatenates the listed
//! parts into one temporary file, checking each part's ETag on the way, then commits it like a
//! single PUT. The object's ETag is the MD5 of the whole content, as the Supabase server reports
//! it. Uploads that are never completed or aborted stay until removed by hand.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::disk::{
    blocking, remove_tree_if_exists, write_file_atomic, DiskStore, IoContext, Layout, NewMeta,
    ObjectMeta, StoreError,
};
use super::keys::{Bucket, Key};
use super::stream::{copy_hashing, TempFile};

const RECORD: &str = "upload.json";
/// S3's highest part number.
pub(crate) const MAX_PART_NUMBER: i32 = 10_000;

/// What `upload.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct UploadRecord {
    bucket: String,
    key: String,
    meta: NewMeta,
    initiated_secs: u64,
}

/// An upload in a ListMultipartUploads answer.
#[derive(Debug, Clone)]
pub(crate) struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// A part as CompleteMultipartUpload lists it.
#[derive(Debug, Clone)]
pub(crate) struct PartRef {
    pub number: i32,
    /// Hex MD5 the client got back from UploadPart, without quotes.
    pub etag: String,
}

impl DiskStore {
    pub(crate) async fn create_upload(
        &self,
        bucket: &Bucket,
        key: &Key,
        meta: NewMeta,
    ) -> Result<String, StoreError> {
        self.require_bucket(bucket).await?;
        let record = UploadRecord {
            bucket: bucket.as_str().to_owned(),
            key: key.as_str().to_owned(),
            meta,
            initiated_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        };
        self.unlocked(move |layout| {
            let id = hex::encode(Md5::digest(layout.unique_token().as_bytes()));
            let dir = upload_dir(layout, &id);
            fs::create_dir(&dir).ctx("create upload directory", &dir)?;
            let json = serde_json::to_vec(&record).map_err(|e| encode_error(&dir, e))?;
            write_file_atomic(layout, &dir.join(RECORD), &json)?;
            Ok(id)
        })
        .await
    }

    /// Stores one part; returns its hex MD5.
    pub(crate) async fn upload_part(
        &self,
        bucket: &Bucket,
        key: &Key,
        upload_id: &str,
        number: i32,
        body: Option<s3s::dto::StreamingBlob>,
    ) -> Result<String, StoreError> {
        // Checked before the body is read, so a wrong id fails fast.
        self.read_record(bucket, key, upload_id).await?;
        let temp = self.write_body(body).await?;
        let etag = temp.md5().to_owned();
        let id = upload_id.to_owned();
        self.unlocked(move |layout| {
            let part = part_path(&upload_dir(layout, &id), number);
            // The upload may have been aborted meanwhile: then its directory is gone.
            fs::rename(temp.path(), &part).map_err(|_| StoreError::NoSuchUpload)?;
            temp.disarm();
            Ok(())
        })
        .await?;
        debug!(%bucket, %key, upload_id, part = number, "stored part");
        Ok(etag)
    }

    pub(crate) async fn complete_upload(
        &self,
        bucket: &Bucket,
        key: &Key,
        upload_id: &str,
        parts: Vec<PartRef>,
    ) -> Result<ObjectMeta, StoreError> {
        let record = self.read_record(bucket, key, upload_id).await?;
        check_part_order(&parts)?;
        let dir = upload_dir(&self.layout, upload_id);
        let temp_path = self.layout.temp_path();
        let limit = self.max_object_size;
        let parts_dir = dir.clone();
        let temp = blocking(move || concatenate(&parts_dir, &parts, temp_path, limit)).await?;
        let meta = self.commit(bucket, key, temp, record.meta).await?;
        blocking(move || remove_tree_if_exists(&dir)).await?;
        Ok(meta)
    }

    pub(crate) async fn abort_upload(
        &self,
        bucket: &Bucket,
        key: &Key,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        self.read_record(bucket, key, upload_id).await?;
        let id = upload_id.to_owned();
        self.unlocked(move |layout| remove_tree_if_exists(&upload_dir(layout, &id)))
            .await
    }

    /// The bucket's unfinished uploads whose key starts with `prefix`, by key then id.
    pub(crate) async fn list_uploads(
        &self,
        bucket: &Bucket,
        prefix: String,
    ) -> Result<Vec<UploadInfo>, StoreError> {
        self.require_bucket(bucket).await?;
        let bucket = bucket.as_str().to_owned();
        self.unlocked(move |layout| {
            let mut uploads = Vec::new();
            let root = layout.uploads_dir();
            for entry in fs::read_dir(root).ctx("read", root)? {
                let entry = entry.ctx("read", root)?;
                let Some(id) = entry
                    .file_name()
                    .to_str()
                    .filter(|id| is_upload_id(id))
                    .map(str::to_owned)
                else {
                    continue;
                };
                let Some(record) = load_record(&entry.path()) else {
                    continue;
                };
                if record.bucket == bucket && record.key.starts_with(&prefix) {
                    let initiated = UNIX_EPOCH + Duration::from_secs(record.initiated_secs);
                    uploads.push(UploadInfo {
                        key: record.key,
                        upload_id: id,
                        initiated,
                    });
                }
            }
            uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
            Ok(uploads)
        })
        .await
    }

    /// The upload's record, if the id names an upload of this bucket and key.
    async fn read_record(
        &self,
        bucket: &Bucket,
        key: &Key,
        upload_id: &str,
    ) -> Result<UploadRecord, StoreError> {
        if !is_upload_id(upload_id) {
            return Err(StoreError::NoSuchUpload);
        }
        let id = upload_id.to_owned();
        let record = self
            .unlocked(move |layout| Ok(load_record(&upload_dir(layout, &id))))
            .await?;
        match record {
            Some(r) if r.bucket == bucket.as_str() && r.key == key.as_str() => Ok(r),
            _ => Err(StoreError::NoSuchUpload),
        }
    }
}

/// Upload ids are 32 lower-case hex digits; checking the form keeps a client's id from naming
/// any other path.
fn is_upload_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn upload_dir(layout: &Layout, id: &str) -> PathBuf {
    layout.uploads_dir().join(id)
}

fn part_path(dir: &Path, number: i32) -> PathBuf {
    dir.join(format!("part-{number:05}"))
}

fn load_record(dir: &Path) -> Option<UploadRecord> {
    let bytes = fs::read(dir.join(RECORD)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn encode_error(path: &Path, e: serde_json::Error) -> StoreError {
    StoreError::Io {
        context: format!("cannot encode {}", path.display()),
        source: std::io::Error::other(e),
    }
}

fn check_part_order(parts: &[PartRef]) -> Result<(), StoreError> {
    if parts.is_empty() {
        return Err(StoreError::InvalidPart("the upload lists no parts".into()));
    }
    if parts
        .windows(2)
        .any(|pair| pair[0].number >= pair[1].number)
    {
        return Err(StoreError::InvalidPartOrder);
    }
    Ok(())
}

/// Joins the listed parts into a new temporary file, checking each part's ETag (blocking).
fn concatenate(
    dir: &Path,
    parts: &[PartRef],
    temp_path: PathBuf,
    limit: Option<u64>,
) -> Result<TempFile, StoreError> {
    let file = File::create_new(&temp_path).ctx("create", &temp_path)?;
    // Armed from the start, so that a failed part leaves nothing behind.
    let temp = TempFile::new(temp_path, String::new(), 0);
    let mut out = BufWriter::with_capacity(super::disk::COPY_BUFFER, file);
    let mut whole = Md5::new();
    let mut size: u64 = 0;
    for part in parts {
        size += append_part(dir, part, &mut out, &mut whole, temp.path())?;
        if let Some(limit) = limit.filter(|&limit| size > limit) {
            return Err(StoreError::TooLarge { limit });
        }
    }
    out.flush().ctx("write", temp.path())?;
    Ok(temp.complete(hex::encode(whole.finalize()), size))
}

fn append_part(
    dir: &Path,
    part: &PartRef,
    out: &mut impl Write,
    whole: &mut Md5,
    temp: &Path,
) -> Result<u64, StoreError> {
    let path = part_path(dir, part.number);
    let mut file = File::open(&path)
        .map_err(|_| StoreError::InvalidPart(format!("part {} was not uploaded", part.number)))?;
    let mut own = Md5::new();
    let len = copy_hashing(&mut file, out, &mut [&mut own, whole]).ctx("copy into", temp)?;
    if !hex::encode(own.finalize()).eq_ignore_ascii_case(&part.etag) {
        return Err(StoreError::InvalidPart(format!(
            "part {} does not have the ETag listed",
            part.number
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_plain_hex() {
        let id = hex::encode([0xab_u8; 16]);
        assert!(is_upload_id(&id));
        assert!(!is_upload_id(&id.to_uppercase()));
        assert!(
            !is_upload_id(&format!("../{}", &id[3..])),
            "same length, a path"
        );
        assert!(!is_upload_id(&id[1..]));
    }

    #[test]
    fn parts_must_ascend() {
        let part = |number| PartRef {
            number,
            etag: String::new(),
        };
        assert!(check_part_order(&[part(1), part(3)]).is_ok());
        assert!(matches!(
            check_part_order(&[part(2), part(1)]),
            Err(StoreError::InvalidPartOrder)
        ));
        assert!(matches!(
            check_part_order(&[part(1), part(1)]),
            Err(StoreError::InvalidPartOrder)
        ));
        assert!(matches!(
            check_part_order(&[]),
            Err(StoreError::InvalidPart(_))
        ));
    }
}
