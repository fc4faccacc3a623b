//! The S3 operations of the local server, on top of [`DiskStore`].
//!
//! Each method checks the names in the request against Supabase's rules, calls the store and
//! fills in the s3s output. Operations not implemented here keep s3s's default answer,
//! `NotImplemented`, so a request is never served by the wrong operation (the Supabase server
//! sends some sub-resources such as `?tagging` to the object itself).

use std::borrow::Cow;
use std::collections::BTreeMap;

use hyper::StatusCode;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use tracing::{debug, warn};

use super::disk::{DiskStore, NewMeta, ObjectMeta, StoreError};
use super::keys::{Bucket, Key, KeyError, Target};
use super::listing::{self, Page, MAX_KEYS};
use super::stream::FileStream;
use super::uploads::{PartRef, UploadInfo, MAX_PART_NUMBER};

pub(crate) struct Backend {
    store: DiskStore,
}

impl Backend {
    pub(crate) fn new(store: DiskStore) -> Backend {
        Backend { store }
    }
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.store.list_buckets().await?;
        let buckets = buckets
            .into_iter()
            .map(|b| s3s::dto::Bucket {
                name: Some(b.name),
                creation_date: Some(Timestamp::from(b.created)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = bucket_name(&req.input.bucket)?;
        self.store.create_bucket(&bucket).await?;
        debug!(%bucket, "created bucket");
        let location = Some(format!("/{bucket}"));
        Ok(S3Response::new(CreateBucketOutput { location }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let bucket = bucket_name(&req.input.bucket)?;
        self.store.require_bucket(&bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = bucket_name(&req.input.bucket)?;
        self.store.delete_bucket(&bucket).await?;
        debug!(%bucket, "deleted bucket");
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let max_keys = page_size(input.max_keys)?;
        let after = resume_point(
            input.continuation_token.as_deref(),
            input.start_after.as_deref(),
        )?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let entries = self
            .store
            .list_entries(&bucket, prefix, input.delimiter.clone())
            .await?;
        let page = listing::paginate(entries, after.as_deref(), max_keys);
        debug!(
            %bucket,
            prefix = ?input.prefix,
            entries = page.entries.len(),
            more = page.next_after.is_some(),
            "listed"
        );
        let output = self.list_output(&bucket, input, page, max_keys).await?;
        Ok(S3Response::new(output))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let bucket = bucket_name(&req.input.bucket)?;
        let key = self.existing_key(&bucket, &req.input.key).await?;
        let (_, meta) = self.store.open_object(&bucket, &key).await?;
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: Some(to_i64(meta.size)),
            content_type: Some(meta.content_type),
            e_tag: Some(ETag::Strong(meta.etag)),
            last_modified: Some(Timestamp::from(meta.last_modified)),
            metadata: to_metadata(meta.metadata),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let bucket = bucket_name(&req.input.bucket)?;
        let key = self.existing_key(&bucket, &req.input.key).await?;
        let (file, meta) = self.store.open_object(&bucket, &key).await?;
        let range = match req.input.range {
            Some(range) => Some(
                range
                    .check(meta.size)
                    .map_err(|_| invalid_range(meta.size))?,
            ),
            None => None,
        };
        let (start, end) = range.as_ref().map_or((0, meta.size), |r| (r.start, r.end));
        debug!(%bucket, %key, start, end, "serving object");
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::new(FileStream::spawn(
                file,
                start,
                end - start,
            ))),
            accept_ranges: Some("bytes".into()),
            content_length: Some(to_i64(end - start)),
            content_range: range.map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size)),
            content_type: Some(meta.content_type),
            e_tag: Some(ETag::Strong(meta.etag)),
            last_modified: Some(Timestamp::from(meta.last_modified)),
            metadata: to_metadata(meta.metadata),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let target = parse_target(&bucket, &input.key)?;
        if matches!(target, Target::Folder(_)) && input.content_length.is_some_and(|n| n > 0) {
            return Err(refused(&bucket, &input.key, &KeyError::FolderWithData));
        }
        self.store.require_bucket(&bucket).await?;
        self.check_declared_size(input.content_length)?;
        let meta = NewMeta {
            content_type: input.content_type,
            metadata: from_metadata(input.metadata),
        };

        let temp = self.store.write_body(input.body).await?;
        let key = match target {
            Target::Object(key) => key,
            Target::Folder(folder) if temp.size() == 0 => {
                debug!(%bucket, %folder, "storing an empty folder marker");
                folder.placeholder()
            }
            Target::Folder(_) => {
                return Err(refused(&bucket, &input.key, &KeyError::FolderWithData))
            }
        };
        let stored = self.store.commit(&bucket, &key, temp, meta).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(stored.etag)),
            size: Some(to_i64(stored.size)),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let key = parse_target(&bucket, &input.key)?
            .into_object()
            .map_err(|e| refused(&bucket, &input.key, &e))?;
        let (source_bucket, source_key) = self.copy_source(&input.copy_source).await?;
        self.store.require_bucket(&bucket).await?;

        let (temp, source_meta) = self.store.copy_to_temp(&source_bucket, &source_key).await?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str().eq_ignore_ascii_case(MetadataDirective::REPLACE));
        let meta = match replace {
            true => NewMeta {
                content_type: input.content_type,
                metadata: from_metadata(input.metadata),
            },
            false => NewMeta {
                content_type: Some(source_meta.content_type),
                metadata: source_meta.metadata,
            },
        };
        let stored = self.store.commit(&bucket, &key, temp, meta).await?;
        debug!(%source_bucket, %source_key, %bucket, %key, replace, "copied object");
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(stored.etag)),
                last_modified: Some(Timestamp::from(stored.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bucket = bucket_name(&req.input.bucket)?;
        let target = parse_target(&bucket, &req.input.key)?;
        self.delete_target(&bucket, target).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        self.store.require_bucket(&bucket).await?;
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            let outcome = match parse_target(&bucket, &object.key) {
                Ok(target) => self
                    .delete_target(&bucket, target)
                    .await
                    .map_err(S3Error::from),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(object.key),
                    ..Default::default()
                }),
                Err(e) => errors.push(s3s::dto::Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(object.key),
                    message: e.message().map(str::to_owned),
                    ..Default::default()
                }),
            }
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then_some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let key = parse_object_key(&bucket, &input.key)?;
        let meta = NewMeta {
            content_type: input.content_type,
            metadata: from_metadata(input.metadata),
        };
        let upload_id = self.store.create_upload(&bucket, &key, meta).await?;
        debug!(%bucket, %key, upload_id, "created multipart upload");
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let key = parse_object_key(&bucket, &input.key)?;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and {MAX_PART_NUMBER}"
            ));
        }
        self.check_declared_size(input.content_length)?;
        let etag = self
            .store
            .upload_part(
                &bucket,
                &key,
                &input.upload_id,
                input.part_number,
                input.body,
            )
            .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let key = parse_object_key(&bucket, &input.key)?;
        let parts = completed_parts(input.multipart_upload)?;
        let count = parts.len();
        let stored = self
            .store
            .complete_upload(&bucket, &key, &input.upload_id, parts)
            .await?;
        let upload_id = &input.upload_id;
        debug!(%bucket, %key, upload_id, parts = count, "completed multipart upload");
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(stored.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let key = parse_object_key(&bucket, &input.key)?;
        self.store
            .abort_upload(&bucket, &key, &input.upload_id)
            .await?;
        debug!(%bucket, %key, upload_id = input.upload_id, "aborted multipart upload");
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let bucket = bucket_name(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads = self.store.list_uploads(&bucket, prefix).await?;
        Ok(S3Response::new(uploads_page(input, uploads)?))
    }
}

impl Backend {
    /// The key of a read: a folder marker (`dir/`) never exists as such, so it is 404 at once.
    async fn existing_key(&self, bucket: &Bucket, raw: &str) -> S3Result<Key> {
        match parse_target(bucket, raw)? {
            Target::Object(key) => Ok(key),
            Target::Folder(_) => {
                self.store.require_bucket(bucket).await?;
                Err(S3Error::from(StoreError::NoSuchKey))
            }
        }
    }

    async fn delete_target(&self, bucket: &Bucket, target: Target) -> Result<(), StoreError> {
        match target {
            Target::Object(key) => self.store.delete_object(bucket, &key).await.map(drop),
            // `dir/` itself is never stored (its marker is `dir/.emptyFolderPlaceholder`).
            Target::Folder(_) => self.store.require_bucket(bucket).await,
        }
    }

    async fn copy_source(&self, source: &CopySource) -> S3Result<(Bucket, Key)> {
        let CopySource::Bucket { bucket, key, .. } = source else {
            return Err(s3_error!(
                NotImplemented,
                "Only bucket/key copy sources are supported"
            ));
        };
        let bucket = bucket_name(bucket)?;
        let key = self.existing_key(&bucket, key).await?;
        Ok((bucket, key))
    }

    /// Refuses a body that declares more than the size limit before any of it is read.
    fn check_declared_size(&self, content_length: Option<i64>) -> S3Result<()> {
        let declared = content_length
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        match self.store.max_object_size {
            Some(limit) if declared > limit => Err(S3Error::from(StoreError::TooLarge { limit })),
            _ => Ok(()),
        }
    }

    async fn list_output(
        &self,
        bucket: &Bucket,
        input: ListObjectsV2Input,
        page: Page,
        max_keys: usize,
    ) -> S3Result<ListObjectsV2Output> {
        let url = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let encode = |s: String| if url { listing::url_encode(&s) } else { s };
        let (prefixes, objects): (Vec<_>, Vec<_>) =
            page.entries.into_iter().partition(|e| e.is_prefix);
        // Listed names are valid keys (the walk skips others).
        let keys: Vec<Key> = objects
            .into_iter()
            .filter_map(|e| Key::parse(&e.name).ok())
            .collect();
        let metas = self.store.list_metas(bucket, keys).await?;
        let key_count = metas.len() + prefixes.len();

        let contents = metas
            .into_iter()
            .map(|(key, meta)| list_entry(encode(key.as_str().to_owned()), meta))
            .collect();
        let common_prefixes = prefixes
            .into_iter()
            .map(|e| CommonPrefix {
                prefix: Some(encode(e.name)),
            })
            .collect();
        Ok(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(encode(input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(encode),
            start_after: input.start_after.map(encode),
            encoding_type: input.encoding_type,
            max_keys: Some(i32::try_from(max_keys).unwrap_or(i32::MAX)),
            key_count: Some(i32::try_from(key_count).unwrap_or(i32::MAX)),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.next_after.is_some()),
            next_continuation_token: page.next_after.as_deref().map(listing::encode_token),
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            ..Default::default()
        })
    }
}

fn list_entry(key: String, meta: ObjectMeta) -> Object {
    Object {
        key: Some(key),
        e_tag: Some(ETag::Strong(meta.etag)),
        size: Some(to_i64(meta.size)),
        last_modified: Some(Timestamp::from(meta.last_modified)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

/// Supabase caps pages at 1000 entries, whatever the client asks for.
fn page_size(max_keys: Option<i32>) -> S3Result<usize> {
    match max_keys {
        None => Ok(MAX_KEYS),
        Some(n) => usize::try_from(n)
            .map(|n| n.min(MAX_KEYS))
            .map_err(|_| s3_error!(InvalidArgument, "max-keys must not be negative")),
    }
}

/// Where a listing page starts: after the continuation token's name, else after `start-after`.
fn resume_point(token: Option<&str>, start_after: Option<&str>) -> S3Result<Option<String>> {
    match token {
        Some(token) => listing::decode_token(token).map(Some).ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        }),
        None => Ok(start_after.map(str::to_owned)),
    }
}

fn completed_parts(upload: Option<CompletedMultipartUpload>) -> S3Result<Vec<PartRef>> {
    let parts = upload.and_then(|u| u.parts).unwrap_or_default();
    parts
        .into_iter()
        .map(|part| {
            let number = part
                .part_number
                .ok_or_else(|| s3_error!(InvalidPart, "A part has no PartNumber"))?;
            let etag = part
                .e_tag
                .ok_or_else(|| s3_error!(InvalidPart, "Part {number} has no ETag"))?;
            Ok(PartRef {
                number,
                etag: etag.value().to_owned(),
            })
        })
        .collect()
}

fn uploads_page(
    input: ListMultipartUploadsInput,
    uploads: Vec<UploadInfo>,
) -> S3Result<ListMultipartUploadsOutput> {
    let max = page_size(input.max_uploads)?;
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let id_marker = input.upload_id_marker.clone().unwrap_or_default();
    let mut after_markers = uploads
        .into_iter()
        .filter(|u| {
            u.key > key_marker
                || (u.key == key_marker && !id_marker.is_empty() && u.upload_id > id_marker)
        })
        .peekable();
    let page: Vec<UploadInfo> = after_markers.by_ref().take(max).collect();
    let truncated = after_markers.peek().is_some();
    let last = page.last().filter(|_| truncated);
    Ok(ListMultipartUploadsOutput {
        next_key_marker: last.map(|u| u.key.clone()),
        next_upload_id_marker: last.map(|u| u.upload_id.clone()),
        is_truncated: Some(truncated),
        max_uploads: Some(i32::try_from(max).unwrap_or(i32::MAX)),
        uploads: Some(page.into_iter().map(upload_entry).collect()),
        bucket: Some(input.bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        ..Default::default()
    })
}

fn upload_entry(upload: UploadInfo) -> MultipartUpload {
    MultipartUpload {
        key: Some(upload.key),
        upload_id: Some(upload.upload_id),
        initiated: Some(Timestamp::from(upload.initiated)),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        ..Default::default()
    }
}

fn bucket_name(raw: &str) -> S3Result<Bucket> {
    Bucket::parse(raw).ok_or_else(|| s3_error!(InvalidBucketName, "The bucket name is not valid"))
}

fn parse_target(bucket: &Bucket, raw: &str) -> S3Result<Target> {
    Target::parse(raw).map_err(|e| refused(bucket, raw, &e))
}

fn parse_object_key(bucket: &Bucket, raw: &str) -> S3Result<Key> {
    parse_target(bucket, raw)?
        .into_object()
        .map_err(|e| refused(bucket, raw, &e))
}

/// 400 `InvalidKey`, as the Supabase server answers; logged because the client sent it anyway.
fn refused(bucket: &Bucket, raw: &str, reason: &KeyError) -> S3Error {
    warn!(%bucket, key = ?raw, %reason, "refused object key");
    custom_error(
        "InvalidKey",
        StatusCode::BAD_REQUEST,
        format!("Invalid key: {reason}"),
    )
}

fn invalid_range(size: u64) -> S3Error {
    let mut e = s3_error!(InvalidRange, "The requested range is not satisfiable");
    let mut headers = hyper::HeaderMap::new();
    if let Ok(value) = format!("bytes */{size}").parse() {
        headers.insert(hyper::header::CONTENT_RANGE, value);
    }
    e.set_headers(headers);
    e
}

fn custom_error(
    code: &'static str,
    status: StatusCode,
    message: impl Into<Cow<'static, str>>,
) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), message);
    e.set_status_code(status);
    e
}

/// The one place that decides how storage failures look to S3 clients.
impl From<StoreError> for S3Error {
    fn from(e: StoreError) -> S3Error {
        match e {
            StoreError::NoSuchBucket => {
                s3_error!(NoSuchBucket, "The specified bucket does not exist")
            }
            StoreError::NoSuchKey => s3_error!(NoSuchKey, "The specified key does not exist."),
            StoreError::BucketExists => s3_error!(BucketAlreadyExists, "The bucket already exists"),
            // Supabase's code and status for this case (S3 would say BucketNotEmpty).
            StoreError::BucketNotEmpty => custom_error(
                "ResourceNotEmpty",
                StatusCode::CONFLICT,
                "The bucket you tried to delete is not empty",
            ),
            StoreError::KeyConflict(message) => {
                custom_error("KeyConflict", StatusCode::CONFLICT, message)
            }
            StoreError::TooLarge { limit } => {
                // 413 as Supabase answers, where s3s's default for EntityTooLarge is 400.
                let mut e = s3_error!(
                    EntityTooLarge,
                    "The object exceeds the maximum allowed size of {limit} bytes"
                );
                e.set_status_code(StatusCode::PAYLOAD_TOO_LARGE);
                e
            }
            StoreError::NoSuchUpload => s3_error!(
                NoSuchUpload,
                "The specified multipart upload does not exist"
            ),
            StoreError::InvalidPart(message) => s3_error!(InvalidPart, "{message}"),
            StoreError::InvalidPartOrder => s3_error!(
                InvalidPartOrder,
                "The list of parts was not in ascending order"
            ),
            StoreError::Body(source) => match source.downcast::<S3Error>() {
                Ok(e) => *e,
                Err(source) => S3Error::with_source(S3ErrorCode::IncompleteBody, source),
            },
            // DataDirInUse only happens at start-up, never during a request.
            e @ (StoreError::Io { .. } | StoreError::DataDirInUse) => {
                warn!(error = %error_chain(&e), "storage failure");
                S3Error::with_source(S3ErrorCode::InternalError, Box::new(e))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn to_metadata(metadata: BTreeMap<String, String>) -> Option<Metadata> {
    (!metadata.is_empty()).then(|| metadata.into_iter().collect())
}

/// Header names arrive lower-cased from hyper; lower-casing again keeps the rule explicit.
fn from_metadata(metadata: Option<Metadata>) -> BTreeMap<String, String> {
    metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
