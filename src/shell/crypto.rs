//! Ed25519 and SHA-256 through WebCrypto (no signing or hash code in the wasm) and
//! `crypto.getRandomValues`.

use js_sys::{Array, Object, Reflect, Uint8Array};
use signal_mesh_proto::PeerId;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, SubtleCrypto};

use crate::core::{ClientError, Code};

/// PKCS#8 `PrivateKeyInfo` prefix of an Ed25519 key; the 32-byte seed follows it.
const PKCS8_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

fn crypto() -> Result<web_sys::Crypto, ClientError> {
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .ok_or_else(|| ClientError::new(Code::Unsupported, "crypto is not available"))
}

fn subtle() -> Result<SubtleCrypto, ClientError> {
    Ok(crypto()?.subtle())
}

fn browser_error(what: &str, e: &JsValue) -> ClientError {
    let detail =
        Reflect::get(e, &JsValue::from_str("message")).ok().and_then(|m| m.as_string()).unwrap_or_default();
    ClientError::new(Code::Browser, [what, ": ", &detail].concat())
}

/// Fills `buf` from `crypto.getRandomValues`.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), ClientError> {
    crypto()?.get_random_values_with_u8_array(buf).map_err(|e| browser_error("getRandomValues", &e))?;
    Ok(())
}

/// A random `u64`.
pub fn random_u64() -> Result<u64, ClientError> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// An Ed25519 signing key held by WebCrypto (not extractable) and its public key.
#[derive(Debug, Clone)]
pub struct Identity {
    key: CryptoKey,
    peer_id: PeerId,
}

async fn import(seed: &[u8; 32], extractable: bool) -> Result<CryptoKey, ClientError> {
    let mut pkcs8 = PKCS8_ED25519_PREFIX.to_vec();
    pkcs8.extend_from_slice(seed);
    let data: Object = Uint8Array::from(pkcs8.as_slice()).into();
    let usages = Array::of1(&JsValue::from_str("sign"));
    let unsupported = |e: JsValue| {
        let mut err = browser_error("Ed25519 key import", &e);
        err.code = Code::Unsupported;
        err.message = ["this browser's WebCrypto lacks Ed25519 (", &err.message, ")"].concat();
        err
    };
    let promise = subtle()?
        .import_key_with_str("pkcs8", &data, "Ed25519", extractable, &usages)
        .map_err(unsupported)?;
    let key = JsFuture::from(promise).await.map_err(unsupported)?;
    key.dyn_into::<CryptoKey>().map_err(|_| ClientError::new(Code::Browser, "importKey returned no key"))
}

impl Identity {
    /// The identity of a 32-byte secret seed.
    pub async fn from_seed(seed: &[u8; 32]) -> Result<Identity, ClientError> {
        // The public key is read once from an extractable copy; the key kept for signing is not
        // extractable.
        let exportable = import(seed, true).await?;
        let jwk = JsFuture::from(
            subtle()?.export_key("jwk", &exportable).map_err(|e| browser_error("exportKey", &e))?,
        )
        .await
        .map_err(|e| browser_error("exportKey", &e))?;
        let x = Reflect::get(&jwk, &JsValue::from_str("x"))
            .ok()
            .and_then(|x| x.as_string())
            .ok_or_else(|| ClientError::new(Code::Browser, "exported key has no public part"))?;
        let public = base64url_decode(&x)
            .and_then(|b| PeerId::from_slice(&b).ok())
            .ok_or_else(|| ClientError::new(Code::Browser, "exported public key is not 32 bytes"))?;
        Ok(Identity { key: import(seed, false).await?, peer_id: public })
    }

    /// A fresh random identity.
    pub async fn generate() -> Result<Identity, ClientError> {
        let mut seed = [0u8; 32];
        random_bytes(&mut seed)?;
        Identity::from_seed(&seed).await
    }

    /// The public key.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `message`.
    pub async fn sign(&self, message: &[u8]) -> Result<[u8; 64], ClientError> {
        let promise = subtle()?
            .sign_with_str_and_u8_array("Ed25519", &self.key, message)
            .map_err(|e| browser_error("sign", &e))?;
        let buf = JsFuture::from(promise).await.map_err(|e| browser_error("sign", &e))?;
        let bytes = Uint8Array::new(&buf).to_vec();
        <[u8; 64]>::try_from(bytes.as_slice())
            .map_err(|_| ClientError::new(Code::Browser, "signature is not 64 bytes"))
    }
}

/// Decodes unpadded base64url (as in a JWK).
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
