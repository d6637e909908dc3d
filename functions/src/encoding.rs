//! Compressing responses for clients that accept gzip.
//!
//! Every HTTP function answers through [`negotiate`]: a text or JSON body of at least
//! [`MIN_BYTES`] goes out gzip-compressed when the request's `Accept-Encoding` allows it, as a
//! binary body that the Lambda runtime base64-encodes and API Gateway decodes again. JSON and the
//! dashboard's script shrink five to ten times, which saves transfer and keeps large pages well
//! under Lambda's 6 MB response limit. A client that does not ask for gzip gets the body as it was.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use http::{HeaderMap, HeaderValue};
use lambda_http::{Body, Response};

/// Bodies shorter than this go out as they are: gzip's framing would cost more than it saves.
pub const MIN_BYTES: usize = 1024;

/// Whether `headers` (a request's) accept a gzip-encoded response (RFC 9110, section 12.5.3):
/// `gzip` (or `x-gzip`) with a non-zero weight, or else `*` with a non-zero weight.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let weight = parts
                .find_map(|param| {
                    let param = param.trim();
                    param.strip_prefix("q=").or_else(|| param.strip_prefix("Q="))
                })
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(weight > 0.0),
                "*" => any = Some(weight > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// `response`, gzip-compressed when `gzip` (see [`accepts_gzip`]) and its body is text or JSON of
/// at least [`MIN_BYTES`] with no encoding yet. Such responses also say `Vary: Accept-Encoding`,
/// compressed or not, so that a cache keeps the two forms apart.
pub fn negotiate(gzip: bool, mut response: Response<Body>) -> Response<Body> {
    let len = match response.body() {
        Body::Text(text) => text.len(),
        Body::Binary(bytes) => bytes.len(),
        _ => return response,
    };
    let headers = response.headers();
    if len < MIN_BYTES || headers.contains_key(CONTENT_ENCODING) || !compressible(headers) {
        return response;
    }
    response
        .headers_mut()
        .append(VARY, HeaderValue::from_static("accept-encoding"));
    if !gzip {
        return response;
    }
    let plain: &[u8] = match response.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => return response,
    };
    let mut encoder = GzEncoder::new(Vec::with_capacity(len / 4), Compression::default());
    let compressed = match encoder.write_all(plain).and_then(|()| encoder.finish()) {
        Ok(compressed) => compressed,
        Err(err) => {
            // Writing into a Vec does not fail; should it, the plain body is still a good answer.
            tracing::warn!(error = %err, "a response could not be compressed; sending it plain");
            return response;
        }
    };
    *response.body_mut() = Body::Binary(compressed);
    response
        .headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    response
}

/// Text, JSON and JavaScript compress well; anything else (or no type at all) is left alone.
fn compressible(headers: &HeaderMap) -> bool {
    let Some(kind) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let kind = kind.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    kind.starts_with("text/") || kind.ends_with("json") || kind.ends_with("javascript") || kind == "image/svg+xml"
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use flate2::read::GzDecoder;
    use http::StatusCode;

    use super::*;
    use crate::api_error::json_response;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(value).expect("a test header"));
        }
        headers
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepts_gzip(&accept(&["gzip"])));
        assert!(accepts_gzip(&accept(&["gzip, deflate, br"])));
        assert!(accepts_gzip(&accept(&["br;q=1.0, GZIP;q=0.5"])));
        assert!(accepts_gzip(&accept(&["identity", "x-gzip"])));
        assert!(accepts_gzip(&accept(&["*"])));
        assert!(accepts_gzip(&accept(&["br, *;q=0.1"])));
        assert!(!accepts_gzip(&accept(&[])));
        assert!(!accepts_gzip(&accept(&["identity"])));
        assert!(!accepts_gzip(&accept(&["deflate, br"])));
        assert!(!accepts_gzip(&accept(&["gzip;q=0"])));
        assert!(!accepts_gzip(&accept(&["gzip; q=0.000"])));
        assert!(
            !accepts_gzip(&accept(&["gzip;q=0, *"])),
            "an explicit refusal wins over *"
        );
        assert!(!accepts_gzip(&accept(&["*;q=0"])));
        assert!(!accepts_gzip(&accept(&["gzip;q=nonsense"])));
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .expect("gzip that unpacks");
        text
    }

    fn big_json() -> (Response<Body>, String) {
        let items: Vec<_> = (0..200)
            .map(|i| serde_json::json!({"id": i, "queue": "default"}))
            .collect();
        let response = json_response(StatusCode::OK, &items);
        let text = serde_json::to_string(&items).expect("JSON text");
        (response, text)
    }

    #[test]
    fn a_large_json_body_is_compressed_when_gzip_is_accepted() {
        let (response, text) = big_json();
        let response = negotiate(true, response);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(response.headers()[VARY], "accept-encoding");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let Body::Binary(bytes) = response.body() else {
            panic!("a compressed body is binary");
        };
        assert!(
            bytes.len() * 4 < text.len(),
            "{} bytes from {}",
            bytes.len(),
            text.len()
        );
        assert_eq!(gunzip(bytes), text);
    }

    #[test]
    fn a_body_stays_plain_without_gzip_or_when_small_or_not_text() {
        let (response, text) = big_json();
        let response = negotiate(false, response);
        assert!(!response.headers().contains_key(CONTENT_ENCODING));
        assert_eq!(response.headers()[VARY], "accept-encoding");
        assert!(matches!(response.body(), Body::Text(t) if *t == text));

        let small = negotiate(
            true,
            json_response(StatusCode::NOT_FOUND, &serde_json::json!({"error": "x"})),
        );
        assert!(!small.headers().contains_key(CONTENT_ENCODING));
        assert!(!small.headers().contains_key(VARY));

        let mut untyped = Response::new(Body::Text("x".repeat(MIN_BYTES * 4)));
        untyped = negotiate(true, untyped);
        assert!(!untyped.headers().contains_key(CONTENT_ENCODING));

        let mut encoded = Response::new(Body::Binary(vec![7; MIN_BYTES * 4]));
        encoded
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        encoded
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("br"));
        let encoded = negotiate(true, encoded);
        assert_eq!(encoded.headers()[CONTENT_ENCODING], "br");
        assert!(matches!(encoded.body(), Body::Binary(b) if *b == vec![7; MIN_BYTES * 4]));
    }
}
