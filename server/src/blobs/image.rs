//! What a picture really is, read from its bytes rather than trusted from its
//! file name or the client's content type.

use natter_shared::limits::{PIC_MAX_BYTES, PIC_MAX_SIDE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Webp,
    Gif,
}

impl ImageKind {
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Webp => "webp",
            ImageKind::Gif => "gif",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Webp => "image/webp",
            ImageKind::Gif => "image/gif",
        }
    }

    pub fn from_extension(extension: &str) -> Option<Self> {
        [
            ImageKind::Png,
            ImageKind::Jpeg,
            ImageKind::Webp,
            ImageKind::Gif,
        ]
        .into_iter()
        .find(|kind| kind.extension() == extension)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the picture is larger than {} MiB", PIC_MAX_BYTES / (1024 * 1024))]
    TooLarge,
    #[error("the picture must be a PNG, JPEG, WebP or GIF image")]
    NotAnImage,
    #[error("the picture must be at most {PIC_MAX_SIDE}x{PIC_MAX_SIDE} pixels")]
    TooManyPixels,
}

/// Checks that `bytes` are a PNG, JPEG, WebP or GIF of a sensible size, by
/// their signature and their header's dimensions.
pub fn inspect(bytes: &[u8]) -> Result<ImageKind, ImageError> {
    if bytes.len() > PIC_MAX_BYTES {
        return Err(ImageError::TooLarge);
    }
    let kind = match imagesize::image_type(bytes).map_err(|_| ImageError::NotAnImage)? {
        imagesize::ImageType::Png => ImageKind::Png,
        imagesize::ImageType::Jpeg => ImageKind::Jpeg,
        imagesize::ImageType::Webp => ImageKind::Webp,
        imagesize::ImageType::Gif => ImageKind::Gif,
        _ => return Err(ImageError::NotAnImage),
    };
    let size = imagesize::blob_size(bytes).map_err(|_| ImageError::NotAnImage)?;
    if size.width == 0 || size.height == 0 {
        return Err(ImageError::NotAnImage);
    }
    if size.width > PIC_MAX_SIDE || size.height > PIC_MAX_SIDE {
        return Err(ImageError::TooManyPixels);
    }
    Ok(kind)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The header of a PNG of the given size (enough for `inspect`).
    pub fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        bytes.extend_from_slice(&13u32.to_be_bytes());
        bytes.extend_from_slice(b"IHDR");
        bytes.extend_from_slice(&width.to_be_bytes());
        bytes.extend_from_slice(&height.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    #[test]
    fn recognises_a_png_and_its_size() {
        assert_eq!(inspect(&png_header(64, 64)), Ok(ImageKind::Png));
    }

    #[test]
    fn refuses_what_is_not_a_picture() {
        assert_eq!(
            inspect(b"#!/bin/sh\nrm -rf /\n"),
            Err(ImageError::NotAnImage)
        );
        assert_eq!(inspect(b""), Err(ImageError::NotAnImage));
        assert_eq!(
            inspect(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            Err(ImageError::NotAnImage)
        );
    }

    #[test]
    fn refuses_huge_dimensions_and_files() {
        assert_eq!(
            inspect(&png_header(100_000, 10)),
            Err(ImageError::TooManyPixels)
        );
        let mut big = png_header(10, 10);
        big.resize(PIC_MAX_BYTES + 1, 0);
        assert_eq!(inspect(&big), Err(ImageError::TooLarge));
    }
}
