//! Validator key files: an Ed25519 secret key as hex in a TOML file, readable by its owner only.
//!
//! The same key signs consensus messages and derives the node's libp2p identity, so a peer id always names one
//! validator and the engine's validator proof ties the two together.

use std::path::Path;

use ed25519_consensus::SigningKey;
use serde::{Deserialize, Serialize};

use baton_consensus::ids::Address;
use malachitebft_app_channel::app::types::Keypair;

use crate::error::NodeError;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// Ed25519 secret key, 32 bytes hex. Keep this file private.
    secret_key: String,
    /// Informational: derived from the secret key.
    public_key: String,
    address: String,
    peer_id: String,
}

/// A loaded validator key.
#[derive(Clone)]
pub struct NodeKey {
    pub signing_key: SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey({})", self.public_key_hex())
    }
}

impl NodeKey {
    pub fn generate() -> Self {
        NodeKey {
            signing_key: SigningKey::new(rand::thread_rng()),
        }
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.signing_key.verification_key().as_bytes())
    }

    pub fn address(&self) -> Address {
        Address::from_public_key_bytes(self.signing_key.verification_key().as_bytes())
    }

    pub fn keypair(&self) -> Result<Keypair, NodeError> {
        Keypair::ed25519_from_bytes(self.signing_key.to_bytes())
            .map_err(|e| NodeError::Key(format!("cannot derive libp2p identity: {e}")))
    }

    pub fn peer_id(&self) -> Result<String, NodeError> {
        Ok(self.keypair()?.public().to_peer_id().to_string())
    }

    /// Writes the key file with mode 0600; refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<(), NodeError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let file = KeyFile {
            secret_key: hex::encode(self.signing_key.to_bytes()),
            public_key: self.public_key_hex(),
            address: self.address().to_hex(),
            peer_id: self.peer_id()?,
        };
        let text = toml::to_string(&file).map_err(|e| NodeError::Key(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| NodeError::Key(format!("{}: {e}", dir.display())))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| NodeError::Key(format!("cannot create {}: {e}", path.display())))?;
        f.write_all(text.as_bytes())
            .map_err(|e| NodeError::Key(format!("{}: {e}", path.display())))?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = read_secret_file(path)?;
        let file: KeyFile = toml::from_str(&text)
            .map_err(|e| NodeError::Key(format!("{}: {e}", path.display())))?;
        let bytes = hex::decode(&file.secret_key).map_err(|e| {
            NodeError::Key(format!("{}: secret_key is not hex: {e}", path.display()))
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            NodeError::Key(format!("{}: secret_key must be 32 bytes", path.display()))
        })?;
        Ok(NodeKey {
            signing_key: SigningKey::from(arr),
        })
    }
}

/// Reads a file holding a secret key, refusing one that users other than its owner and group may read (a key
/// readable by every account on the machine is as good as published). Group access is allowed: Kubernetes
/// mounts secrets group-readable for the pod's `fsGroup`.
pub fn read_secret_file(path: &Path) -> Result<String, NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| NodeError::Key(format!("cannot read key file {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(NodeError::Key(format!(
            "key file {} is readable by other users (mode {mode:o}): restrict it with `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| NodeError::Key(format!("cannot read key file {}: {e}", path.display())))
}

/// Writes a new file holding a secret key, readable by its owner only (mode 600); an existing file is never
/// overwritten.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), NodeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| NodeError::Key(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| NodeError::Key(format!("{}: {e}", path.display())))
}

/// The libp2p peer id of a validator, from its Ed25519 public key (hex).
pub fn peer_id_of(public_key_hex: &str) -> Result<String, NodeError> {
    let bytes = hex::decode(public_key_hex.trim_start_matches("0x"))
        .map_err(|e| NodeError::Key(format!("public key is not hex: {e}")))?;
    let ed = libp2p_identity::ed25519::PublicKey::try_from_bytes(&bytes)
        .map_err(|e| NodeError::Key(format!("not an Ed25519 public key: {e}")))?;
    Ok(libp2p_identity::PublicKey::from(ed)
        .to_peer_id()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        let k = NodeKey::generate();
        k.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = NodeKey::load(&path).unwrap();
        assert_eq!(back.public_key_hex(), k.public_key_hex());
        assert!(k.save(&path).is_err(), "must not overwrite a key");
        // A key file every account can read is refused, with the fix in the message.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = NodeKey::load(&path).expect_err("refused").to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        NodeKey::load(&path).expect("group-readable is fine (Kubernetes fsGroup)");
        let l1 = dir.path().join("l1.key");
        write_secret_file(
            &l1,
            &format!(
                "{}\n",
                alloy_signer_local::PrivateKeySigner::random().to_bytes()
            ),
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(&l1).unwrap().permissions().mode() & 0o777,
            0o600
        );
        crate::l1::load_l1_key(&l1).unwrap();
        std::fs::set_permissions(&l1, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(crate::l1::load_l1_key(&l1).is_err());
        assert_eq!(
            peer_id_of(&k.public_key_hex()).unwrap(),
            k.peer_id().unwrap()
        );
    }
}
