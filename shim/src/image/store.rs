//! containerd's API, the few calls a runner makes to find its payload: the container record
//! (which image), the image record (its target descriptor) and the content store (the
//! documents and the layer's bytes).
//!
//! It runs on a current-thread tokio runtime made for the fetch and dropped with it, so a
//! runner holds no runtime, thread or connection once its container is prepared.

use std::time::Duration;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::ImageError;
use super::manifest::Descriptor;

/// The longest a whole fetch may take (containerd answers from local disk).
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A bound on the JSON documents (index, manifest, config) read whole.
pub const MAX_DOCUMENT_BYTES: i64 = 4 << 20;

/// A connection to containerd's gRPC API in one namespace.
pub struct Store {
    channel: Channel,
    namespace: String,
}

/// Runs `work` against containerd at `address` on a runtime dropped before returning.
pub fn with_store<T>(
    address: &str,
    namespace: &str,
    work: impl AsyncFnOnce(&Store) -> Result<T, ImageError>,
) -> Result<T, ImageError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| ImageError::Connect {
            address: address.to_owned(),
            message: format!("starting the client runtime: {e}"),
        })?;
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(address)
        .to_owned();
    runtime.block_on(async {
        let fetch = async {
            let channel =
                containerd_client::connect(&path)
                    .await
                    .map_err(|e| ImageError::Connect {
                        address: address.to_owned(),
                        message: e.to_string(),
                    })?;
            let store = Store {
                channel,
                namespace: namespace.to_owned(),
            };
            work(&store).await
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .unwrap_or(Err(ImageError::Timeout(FETCH_TIMEOUT)))
    })
}

impl Store {
    fn request<T>(&self, message: T) -> Result<Request<T>, ImageError> {
        let mut request = Request::new(message);
        let namespace = self
            .namespace
            .parse()
            .map_err(|_| ImageError::Api(format!("namespace {:?} is not ASCII", self.namespace)))?;
        request
            .metadata_mut()
            .insert("containerd-namespace", namespace);
        Ok(request)
    }

    /// The image name the container record of `id` names (empty when none).
    pub async fn container_image(&self, id: &str) -> Result<String, ImageError> {
        let request = self.request(GetContainerRequest { id: id.to_owned() })?;
        let answer = ContainersClient::new(self.channel.clone())
            .get(request)
            .await
            .map_err(|s| ImageError::Api(format!("getting container {id}: {}", s.message())))?;
        Ok(answer
            .into_inner()
            .container
            .map(|c| c.image)
            .unwrap_or_default())
    }

    /// The target descriptor of image `name`.
    pub async fn image_target(&self, name: &str) -> Result<Descriptor, ImageError> {
        let request = self.request(GetImageRequest {
            name: name.to_owned(),
        })?;
        let answer = ImagesClient::new(self.channel.clone())
            .get(request)
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => ImageError::ImageMissing(name.to_owned()),
                _ => ImageError::Api(format!("getting image {name}: {}", s.message())),
            })?;
        let target = answer
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| ImageError::Api(format!("image {name} has no target")))?;
        Ok(Descriptor {
            media_type: target.media_type,
            digest: target.digest,
            size: target.size,
            annotations: target.annotations.into_iter().collect(),
            platform: None,
        })
    }

    /// The whole blob `desc` names; at most `max` bytes, and exactly `desc.size` when known.
    pub async fn read(&self, desc: &Descriptor, max: i64) -> Result<Vec<u8>, ImageError> {
        if desc.size > max {
            return Err(ImageError::TooLarge {
                digest: desc.digest.clone(),
                size: desc.size,
                max,
            });
        }
        let request = self.request(ReadContentRequest {
            digest: desc.digest.clone(),
            offset: 0,
            size: 0,
        })?;
        let missing = |s: tonic::Status| match s.code() {
            Code::NotFound => ImageError::ContentMissing(desc.digest.clone()),
            _ => ImageError::Api(format!("reading {}: {}", desc.digest, s.message())),
        };
        let mut stream = ContentClient::new(self.channel.clone())
            .read(request)
            .await
            .map_err(missing)?
            .into_inner();
        let mut bytes = Vec::with_capacity(desc.size.max(0) as usize);
        while let Some(chunk) = stream.message().await.map_err(missing)? {
            bytes.extend_from_slice(&chunk.data);
            if bytes.len() as i64 > max {
                return Err(ImageError::TooLarge {
                    digest: desc.digest.clone(),
                    size: bytes.len() as i64,
                    max,
                });
            }
        }
        if desc.size > 0 && bytes.len() as i64 != desc.size {
            return Err(ImageError::Api(format!(
                "{}: read {} bytes, the descriptor says {}",
                desc.digest,
                bytes.len(),
                desc.size
            )));
        }
        Ok(bytes)
    }
}
