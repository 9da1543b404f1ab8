//! `ossc secret generate`: prints a fresh cluster secret.
//!
//! Design decision: 32 bytes from the operating system's generator (256
//! bits, twice the 128 the peer layer requires), printed as unpadded
//! base64url (43 characters, safe in files, environment variables and
//! Kubernetes Secrets) or, with `--hex`, as 64 hex digits. Either form passes
//! [`crate::swarm::auth::check_secret_strength`] by construction.

use base64::Engine;

/// Random bytes in a generated secret.
pub const SECRET_BYTES: usize = 32;

#[derive(clap::Args, Debug)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Print a new random cluster secret (32 bytes, base64url) on stdout.
    Generate {
        /// Print hex (64 digits) instead of base64url.
        #[arg(long)]
        hex: bool,
    },
}

/// A new secret in the chosen encoding.
pub fn generate(hex: bool) -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    if hex {
        hex::encode(bytes)
    } else {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// Runs `ossc secret ...`.
pub fn run(args: SecretArgs) -> anyhow::Result<()> {
    match args.command {
        SecretCommand::Generate { hex } => println!("{}", generate(hex)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::ClusterSecret;

    #[test]
    fn generated_secrets_are_fresh_strong_and_decode_to_32_bytes() {
        let a = generate(false);
        assert_eq!(a.len(), 43, "{a}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), SECRET_BYTES);
        let h = generate(true);
        assert_eq!(hex::decode(&h).unwrap().len(), SECRET_BYTES);
        assert_ne!(a, generate(false));
        ClusterSecret::new(a.as_bytes()).unwrap();
        ClusterSecret::new(h.as_bytes()).unwrap();
    }
}
