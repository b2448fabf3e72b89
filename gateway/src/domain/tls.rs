//! Per-cluster TLS credentials. As in dask-gateway, one self-signed pair is
//! shared by the client, the scheduler and the workers (mutual TLS, the
//! certificate is its own CA); SANs are the cluster's name and `dask-internal`.
//! ECDSA P-256 instead of RSA 2048: the same trust model, generated in
//! microseconds instead of tens of milliseconds.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn new_credentials(cluster_name: &str) -> anyhow::Result<Credentials> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        cluster_name.to_string(),
        "dask-internal".into(),
        "skein-internal".into(),
    ])?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "dask-internal");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key)?;
    Ok(Credentials { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_pem_and_unique() {
        let a = super::new_credentials("abc").unwrap();
        let b = super::new_credentials("abc").unwrap();
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(a.key_pem, b.key_pem);
    }
}
