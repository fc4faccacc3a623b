//! The S3 implementation of [`ObjectStore`], the only code that knows aws-sdk-s3.
//!
//! Requests follow Supabase Storage's limits: bodies are sent from memory (the server caps
//! aws-chunked streaming chunks), checksums only when an operation requires them, and no
//! sub-resource the server does not implement.

use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart as S3CompletedPart, MetadataDirective,
};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::{
    fill, CompletedPart, Filled, GetResult, ListPage, ObjectInfo, ObjectStore, StoreError,
    StoreResult, UserMeta,
};
use crate::error_chain::error_chain;

/// One bucket behind an S3 endpoint.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    endpoint: String,
}

impl S3Store {
    pub fn new(client: Client, bucket: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            endpoint: endpoint.into(),
        }
    }
}

/// Turn an SDK failure into a meaning. `key` names the object for NotFound.
fn map_err<E>(
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    bucket: &str,
    key: &str,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or_default().to_string();
            let message = service.err().message().unwrap_or_default().to_string();
            classify(status, &code, message, bucket, key)
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() || failure.is_io() => {
            StoreError::Unreachable {
                message: error_chain(&err),
            }
        }
        SdkError::TimeoutError(_) => StoreError::Unreachable {
            message: error_chain(&err),
        },
        _ => match err.raw_response() {
            Some(raw) => classify(raw.status().as_u16(), "", error_chain(&err), bucket, key),
            None => StoreError::Transient {
                message: error_chain(&err),
            },
        },
    }
}

/// Map an HTTP status and S3 error code to a meaning. A HEAD answer has no body, so the status
/// alone must decide there.
pub fn classify(status: u16, code: &str, message: String, bucket: &str, key: &str) -> StoreError {
    let expired = message.contains("\"exp\"") || message.contains("exp claim");
    match (status, code) {
        (_, "NoSuchKey") | (404, "") | (404, "NotFound") => StoreError::NotFound {
            key: key.to_string(),
        },
        (_, "NoSuchBucket") => StoreError::NoSuchBucket {
            bucket: bucket.to_string(),
        },
        (_, "SignatureDoesNotMatch") => StoreError::SignatureMismatch { message },
        (_, "ExpiredToken") => StoreError::ExpiredToken { message },
        (403, _) if expired => StoreError::ExpiredToken { message },
        (403, _) => StoreError::AccessDenied { message },
        (_, "InvalidKey") => StoreError::InvalidKey {
            key: key.to_string(),
            message,
        },
        (413, _) | (_, "EntityTooLarge") => StoreError::TooLarge { message },
        (415, _) => StoreError::UnsupportedMediaType { message },
        (416, _) | (_, "InvalidRange") => StoreError::InvalidRange,
        (429, _) | (500..=599, _) => StoreError::Transient {
            message: format!("HTTP {status} {code}: {message}"),
        },
        _ => StoreError::Other {
            status,
            code: code.to_string(),
            message,
        },
    }
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("bucket {:?} at {}", self.bucket, self.endpoint)
    }

    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        continuation: Option<String>,
        max_keys: i32,
    ) -> StoreResult<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .set_continuation_token(continuation)
            .max_keys(max_keys)
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, prefix))?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(str::to_string),
                    last_modified: to_system_time(o.last_modified()),
                    metadata: UserMeta::new(),
                })
            })
            .collect();
        let prefixes = out
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_string))
            .collect();
        let next_token = match out.is_truncated() {
            Some(true) => out.next_continuation_token().map(str::to_string),
            _ => None,
        };
        Ok(ListPage {
            objects,
            prefixes,
            next_token,
        })
    }

    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().map(str::to_string),
            last_modified: to_system_time(out.last_modified()),
            metadata: out
                .metadata()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.to_lowercase(), v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> StoreResult<GetResult> {
        let buffer = Vec::with_capacity((end - start) as usize);
        let mut got = self.get_into(key, start, end, vec![buffer]).await?;
        Ok(GetResult {
            data: Bytes::from(got.buffers.pop().unwrap_or_default()),
            etag: got.etag,
        })
    }

    async fn get_into(
        &self,
        key: &str,
        start: u64,
        end: u64,
        mut buffers: Vec<Vec<u8>>,
    ) -> StoreResult<Filled> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", start, end - 1))
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        let etag = out.e_tag().map(str::to_string);
        let mut body = out.body;
        while let Some(chunk) = body.try_next().await.map_err(|e| StoreError::Transient {
            message: format!("reading the body of {key:?}: {}", error_chain(&e)),
        })? {
            fill(&mut buffers, &chunk);
        }
        Ok(Filled { buffers, etag })
    }

    async fn put(&self, key: &str, body: Bytes, meta: &UserMeta) -> StoreResult<Option<String>> {
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .set_metadata(non_empty(meta))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        Ok(out.e_tag().map(str::to_string))
    }

    async fn create_multipart(&self, key: &str, meta: &UserMeta) -> StoreResult<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type(key))
            .set_metadata(non_empty(meta))
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other {
                status: 200,
                code: String::new(),
                message: "CreateMultipartUpload answered without an upload id".into(),
            })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> StoreResult<String> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> StoreResult<Option<String>> {
        let parts = parts
            .into_iter()
            .map(|p| {
                S3CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(p.etag)
                    .build()
            })
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        Ok(out.e_tag().map(str::to_string))
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        Ok(())
    }

    async fn copy(&self, from: &str, to: &str, replace: Option<&UserMeta>) -> StoreResult<()> {
        // Supabase does not URL-decode x-amz-copy-source, so it is sent raw.
        let mut request = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(format!("{}/{}", self.bucket, from));
        if let Some(meta) = replace {
            // With REPLACE the Content-Type is replaced too: send the one uploads send.
            request = request
                .metadata_directive(MetadataDirective::Replace)
                .content_type(content_type(to))
                .set_metadata(non_empty(meta));
        }
        request
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, from))?;
        Ok(())
    }

    async fn replace_metadata(&self, key: &str, meta: &UserMeta) -> StoreResult<()> {
        self.copy(key, key, Some(meta)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err(e, &self.bucket, key))?;
        Ok(())
    }
}

fn non_empty(meta: &UserMeta) -> Option<std::collections::HashMap<String, String>> {
    (!meta.is_empty()).then(|| meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// A real Content-Type, because a bucket may restrict the MIME types it accepts.
fn content_type(key: &str) -> String {
    mime_guess::from_path(key)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_supabase_answers() {
        let denied = classify(403, "AccessDenied", "new row violates".into(), "b", "k");
        assert!(matches!(denied, StoreError::AccessDenied { .. }));
        let expired = classify(
            403,
            "AccessDenied",
            "\"exp\" claim timestamp check failed".into(),
            "b",
            "k",
        );
        assert!(matches!(expired, StoreError::ExpiredToken { .. }));
        assert!(matches!(
            classify(404, "", String::new(), "b", "k"),
            StoreError::NotFound { .. }
        ));
        assert!(matches!(
            classify(400, "InvalidKey", String::new(), "b", "k"),
            StoreError::InvalidKey { .. }
        ));
        assert!(matches!(
            classify(503, "SlowDown", String::new(), "b", "k"),
            StoreError::Transient { .. }
        ));
        assert!(matches!(
            classify(413, "", String::new(), "b", "k"),
            StoreError::TooLarge { .. }
        ));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/b.TXT"), "text/plain");
        assert_eq!(content_type("x.json"), "application/json");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
