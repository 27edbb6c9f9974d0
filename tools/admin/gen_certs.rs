//! `strata-admin gen-certs`: the cluster CA and one certificate per node for
//! node-to-node mutual TLS (`strata::net::tls::ClusterTls`).
//!
//! Every node certificate is signed by the cluster CA, names the node, and
//! allows both server and client authentication, since a node accepts
//! links from its peers and opens links to them with the same identity.
//! A directory that already holds the CA keeps it, so nodes can be added
//! later; nothing is overwritten without `--force`.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use strata::net::tls::{self, ClusterTls};

/// File name of the CA certificate inside `--out`.
const CA_CERT: &str = "ca.crt";
/// File name of the CA private key inside `--out`.
const CA_KEY: &str = "ca.key";
/// Subject common name of a CA this tool creates.
const CA_COMMON_NAME: &str = "strata cluster CA";
/// A new CA lives at least this long (ten years), so that node certificates
/// can be issued and renewed under it for a long time.
const CA_MIN_DAYS: u32 = 3650;
/// Names every node certificate carries besides its own, so that a node is
/// reachable as "localhost" on its own machine and in tests.
const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `strata-admin gen-certs`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Writes DIR/ca.crt and DIR/ca.key (the cluster CA), and DIR/NAME.crt and DIR/NAME.key for \
every --node. Each node certificate is signed by the CA, valid for server and client \
authentication, and names NAME, localhost, 127.0.0.1, ::1 and every --san. Keys are \
ECDSA P-256, written with mode 0600.

When DIR already has ca.crt and ca.key (and no --force), that CA signs the new node \
certificates: run again with new --node names to add nodes to a cluster. To renew one \
node's certificate under the same CA, delete its two files and run again without --force.

Example: strata-admin gen-certs --out certs --node n1 --node n2 --node n3")]
pub struct Args {
    /// Directory to write the files into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// A node to issue a certificate for: written as DIR/NAME.crt and
    /// DIR/NAME.key, with NAME as a DNS name in it (letters, digits, '-'
    /// and '.'). Repeat for several nodes.
    #[arg(long = "node", value_name = "NAME", required = true)]
    nodes: Vec<String>,

    /// An extra host name or IP address to put in every node certificate
    /// issued by this run (an IP address becomes an IP SAN, anything else a
    /// DNS SAN). Peers must connect by one of the names a certificate holds.
    /// Repeatable.
    #[arg(long = "san", value_name = "HOST_OR_IP")]
    sans: Vec<String>,

    /// How long the node certificates are valid, in days. A new CA gets ten
    /// years, or N days if that is longer.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 825,
        value_parser = clap::value_parser!(u32).range(1..=36500)
    )]
    days: u32,

    /// Create a new CA even if DIR has one, and overwrite existing node
    /// files. Certificates signed by the replaced CA stop verifying, so
    /// every node then needs new files.
    #[arg(long)]
    force: bool,
}

/// One node to issue a certificate for.
struct Node {
    name: String,
    sans: Vec<SanType>,
    cert: PathBuf,
    key: PathBuf,
}

/// The CA that signs this run's certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Set when this run created the CA (its files still to be written).
    new_pem: Option<(String, String)>,
    /// Whether issued certificates name the CA's key identifier (authority
    /// key identifier): only when it is known, since OpenSSL, for one,
    /// refuses to chain through a wrong one.
    names_key_id: bool,
    /// The CA certificate as a trust anchor, to check what it signs.
    roots: RootCertStore,
}

/// Runs `gen-certs`.
///
/// # Errors
///
/// Bad node names or SANs, existing files without `--force`, an unusable
/// existing CA, and file-system failures; each message names the file.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = args.out.as_path();
    let nodes = plan(args)?;
    // IMPORTANT: refuse before anything is created or written, so a refused
    // run leaves the directory as it was.
    if !args.force {
        for node in &nodes {
            for path in [&node.cert, &node.key] {
                if exists(path) {
                    bail!(
                        "{} already exists; pass --force to overwrite it (every node then needs \
                         new files), or delete that node's .crt and .key to renew it under the \
                         same CA",
                        path.display()
                    );
                }
            }
        }
    }
    let ca_cert = dir.join(CA_CERT);
    let ca_key = dir.join(CA_KEY);
    let today = days_since_epoch()?;
    let ca = match (args.force, exists(&ca_cert), exists(&ca_key)) {
        (false, true, true) => load_ca(&ca_cert, &ca_key)?,
        (false, true, false) | (false, false, true) => {
            let (present, absent) = if exists(&ca_cert) {
                (&ca_cert, &ca_key)
            } else {
                (&ca_key, &ca_cert)
            };
            bail!(
                "{} exists but {} does not: cannot sign with that CA; restore the missing file, \
                 or pass --force to create a new CA (every node then needs new files)",
                present.display(),
                absent.display()
            );
        }
        _ => new_ca(today, args.days.max(CA_MIN_DAYS))?,
    };

    let mut issued = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let (cert, key) = issue(&ca, node, today, args.days)?;
        check_signed_by(&ca, &cert).with_context(|| {
            format!(
                "a certificate signed with {} does not verify under {} (its subject name may \
                 use an encoding this tool cannot reproduce); pass --force to create a new CA",
                ca_key.display(),
                ca_cert.display()
            )
        })?;
        issued.push((cert.pem(), key.serialize_pem()));
    }

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some((cert_pem, key_pem)) = &ca.new_pem {
        write(&ca_key, key_pem, true)?;
        write(&ca_cert, cert_pem, false)?;
    }
    for (node, (cert_pem, key_pem)) in nodes.iter().zip(&issued) {
        write(&node.key, key_pem, true)?;
        write(&node.cert, cert_pem, false)?;
    }
    // What a node will load at start must load here.
    for node in &nodes {
        cluster_files(dir, node)
            .load()
            .with_context(|| format!("checking the files written for node {}", node.name))?;
    }

    report(args, &nodes, ca.new_pem.is_some());
    if ca.new_pem.is_some() {
        warn_stale(dir, &nodes)?;
    }
    Ok(())
}

/// Validates the node names and SANs and lays out the files.
fn plan(args: &Args) -> anyhow::Result<Vec<Node>> {
    let mut extra = Vec::new();
    for san in &args.sans {
        extra.push(san_of(san)?);
    }
    let mut nodes: Vec<Node> = Vec::new();
    for name in &args.nodes {
        check_node_name(name)?;
        if nodes.iter().any(|n| n.name == *name) {
            bail!("node {name:?} is given twice");
        }
        let mut sans = vec![san_of(name)?];
        for local in LOCAL_NAMES {
            sans.push(san_of(local)?);
        }
        sans.extend(extra.iter().cloned());
        let mut unique = Vec::with_capacity(sans.len());
        for san in sans {
            if !unique.contains(&san) {
                unique.push(san);
            }
        }
        nodes.push(Node {
            name: name.clone(),
            sans: unique,
            cert: args.out.join(format!("{name}.crt")),
            key: args.out.join(format!("{name}.key")),
        });
    }
    Ok(nodes)
}

/// A node name becomes a file name and a DNS name: keep it to both.
fn check_node_name(name: &str) -> anyhow::Result<()> {
    if name.parse::<IpAddr>().is_ok() {
        bail!(
            "node name {name:?} is an IP address; name nodes by host name and pass addresses \
             with --san"
        );
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if name.is_empty()
        || !name.chars().all(allowed)
        || name.starts_with(['.', '-'])
        || name.ends_with(['.', '-'])
    {
        bail!(
            "node name {name:?}: use letters, digits, '-' and '.', starting and ending with a \
             letter or digit (it becomes a file name and a DNS name in the certificate)"
        );
    }
    if name.eq_ignore_ascii_case("ca") {
        bail!("node name {name:?} would collide with the CA's files ({CA_CERT}, {CA_KEY})");
    }
    Ok(())
}

/// An IP SAN for an IP address, a DNS SAN for a valid host name.
fn san_of(text: &str) -> anyhow::Result<SanType> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    match ServerName::try_from(text) {
        Ok(ServerName::DnsName(_)) => {
            let name = Ia5String::try_from(text)
                .map_err(|e| anyhow!("{text:?} is not usable as a DNS name: {e}"))?;
            Ok(SanType::DnsName(name))
        }
        _ => bail!("{text:?} is neither an IP address nor a valid DNS name"),
    }
}

/// Creates a CA valid from yesterday for `days` days from today.
fn new_ca(today: i64, days: u32) -> anyhow::Result<Ca> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    // Path length 0: the CA signs node certificates, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, today, days);
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    let mut roots = RootCertStore::empty();
    roots
        .add(cert.der().clone())
        .context("the new CA certificate is not a usable trust anchor")?;
    let new_pem = Some((cert.pem(), key.serialize_pem()));
    Ok(Ca {
        issuer: Issuer::new(params, key),
        new_pem,
        // rcgen writes the CA's subject key identifier with the same method.
        names_key_id: true,
        roots,
    })
}

/// Loads an existing CA to sign with. The issuer name of what it signs
/// must equal its subject byte for byte (that is how verifiers chain), so
/// the subject is read back from the certificate itself.
fn load_ca(cert_path: &Path, key_path: &Path) -> anyhow::Result<Ca> {
    let cert_pem =
        fs::read(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem = fs::read(key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let cert = CertificateDer::pem_slice_iter(&cert_pem)
        .next()
        .ok_or_else(|| anyhow!("{}: no CERTIFICATE block", cert_path.display()))?
        .map_err(|e| anyhow!("{}: not a PEM file: {e}", cert_path.display()))?;
    let key_text = std::str::from_utf8(&key_pem)
        .map_err(|_| anyhow!("{}: not a PEM file", key_path.display()))?;
    let key = KeyPair::from_pem(key_text)
        .map_err(|e| anyhow!("{}: not a usable private key: {e}", key_path.display()))?;

    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow!("{}: not a usable private key: {e}", key_path.display()))?;
    match rustls::sign::CertifiedKey::from_der(vec![cert.clone()], key_der, &tls::provider()) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(_)) => bail!(
            "{} does not belong to {}; restore the matching key, or pass --force to create a \
             new CA (every node then needs new files)",
            key_path.display(),
            cert_path.display()
        ),
        Err(e) => bail!(
            "{} or {} is unusable: {e}",
            cert_path.display(),
            key_path.display()
        ),
    }

    let key_id = subject_key_id(&cert).with_context(|| {
        format!(
            "{}: cannot read the CA certificate; pass --force to create a new CA",
            cert_path.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    roots
        .add(cert)
        .map_err(|e| anyhow!("{}: not a usable CA certificate: {e}", cert_path.display()))?;
    let subject = parse_name(roots.roots[0].subject.as_ref()).with_context(|| {
        format!(
            "{}: cannot read the CA's subject name; pass --force to create a new CA",
            cert_path.display()
        )
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let names_key_id = key_id.is_some();
    if let Some(id) = key_id {
        params.key_identifier_method = KeyIdMethod::PreSpecified(id);
    }
    Ok(Ca {
        issuer: Issuer::new(params, key),
        new_pem: None,
        names_key_id,
        roots,
    })
}

/// Signs a certificate for `node`, valid from yesterday for `days` days.
fn issue(
    ca: &Ca,
    node: &Node,
    today: i64,
    days: u32,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, node.name.as_str());
    params.subject_alt_names = node.sans.clone();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // The same certificate accepts links (server) and opens them (client).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = ca.names_key_id;
    set_validity(&mut params, today, days);
    let key =
        KeyPair::generate().with_context(|| format!("generating the key of {}", node.name))?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .with_context(|| format!("signing the certificate of {}", node.name))?;
    Ok((cert, key))
}

/// Checks that `cert` chains to the CA, as a peer will check it.
fn check_signed_by(ca: &Ca, cert: &rcgen::Certificate) -> anyhow::Result<()> {
    let parsed = ParsedCertificate::try_from(cert.der())?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &ca.roots,
        &[],
        UnixTime::now(),
        tls::provider().signature_verification_algorithms.all,
    )?;
    Ok(())
}

/// Validity from the start of yesterday (UTC; tolerates clocks a little
/// behind) to the end of the day `days` days from today.
fn set_validity(params: &mut CertificateParams, today: i64, days: u32) {
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + i64::from(days) + 1);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Whole days since 1970-01-01 (UTC), today.
fn days_since_epoch() -> anyhow::Result<i64> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    Ok(i64::try_from(secs / 86_400)?)
}

/// The proleptic Gregorian (year, month, day) of a day number counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Bounded: --days is at most 36500, so the year fits in four digits.
    (year as i32, month as u8, day as u8)
}

/// Reads an X.509 `Name` (the contents of its SEQUENCE) into rcgen's form,
/// keeping each attribute's order, OID and string type, so that rcgen
/// encodes it back to the same bytes.
fn parse_name(mut der: &[u8]) -> anyhow::Result<DistinguishedName> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;
    let mut name = DistinguishedName::new();
    while !der.is_empty() {
        let (tag, mut rdn, rest) = read_tlv(der)?;
        der = rest;
        if tag != SET {
            bail!("malformed name: expected a SET, found tag {tag:#04x}");
        }
        let (tag, attribute, more) = read_tlv(rdn)?;
        if tag != SEQUENCE || !more.is_empty() {
            bail!("malformed or multi-valued name component");
        }
        rdn = attribute;
        let (tag, oid, value) = read_tlv(rdn)?;
        if tag != OID {
            bail!("malformed name: expected an OID, found tag {tag:#04x}");
        }
        let (tag, text, rest) = read_tlv(value)?;
        if !rest.is_empty() {
            bail!("malformed name component");
        }
        let text = std::str::from_utf8(text).context("name component is not text")?;
        let value = match tag {
            UTF8_STRING => DnValue::Utf8String(text.to_string()),
            PRINTABLE_STRING => DnValue::PrintableString(PrintableString::try_from(text)?),
            IA5_STRING => DnValue::Ia5String(Ia5String::try_from(text)?),
            other => bail!("name component of string type {other:#04x} is not supported"),
        };
        let ty = DnType::CustomDnType(parse_oid(oid)?);
        if name.get(&ty).is_some() {
            bail!("name repeats an attribute type");
        }
        name.push(ty, value);
    }
    Ok(name)
}

/// The subject key identifier of a certificate, if it has that extension.
fn subject_key_id(cert: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
    const SEQUENCE: u8 = 0x30;
    const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT in TBSCertificate
    const OCTET_STRING: u8 = 0x04;
    const SUBJECT_KEY_ID: [u8; 3] = [0x55, 0x1d, 0x0e]; // 2.5.29.14
    let (_, certificate, _) = read_tlv(cert)?;
    let (tag, mut tbs, _) = read_tlv(certificate)?;
    if tag != SEQUENCE {
        bail!("malformed certificate");
    }
    while !tbs.is_empty() {
        let (tag, value, rest) = read_tlv(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (_, mut extensions, _) = read_tlv(value)?;
        while !extensions.is_empty() {
            let (_, extension, rest) = read_tlv(extensions)?;
            extensions = rest;
            let (_, oid, mut fields) = read_tlv(extension)?;
            if oid != SUBJECT_KEY_ID {
                continue;
            }
            // An optional `critical` BOOLEAN, then the OCTET STRING that
            // wraps the key identifier's own OCTET STRING.
            loop {
                let (tag, value, rest) = read_tlv(fields)?;
                fields = rest;
                if tag == OCTET_STRING {
                    let (tag, id, _) = read_tlv(value)?;
                    if tag != OCTET_STRING {
                        bail!("malformed subject key identifier");
                    }
                    return Ok(Some(id.to_vec()));
                }
            }
        }
    }
    Ok(None)
}

/// Splits one DER tag-length-value off `der`: (tag, value, rest).
fn read_tlv(der: &[u8]) -> anyhow::Result<(u8, &[u8], &[u8])> {
    let truncated = || anyhow!("truncated DER");
    let (&tag, rest) = der.split_first().ok_or_else(truncated)?;
    let (&first, mut rest) = rest.split_first().ok_or_else(truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            bail!("unsupported DER length");
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return Err(truncated());
    }
    let (value, rest) = rest.split_at(len);
    Ok((tag, value, rest))
}

/// The arcs of a DER-encoded OID.
fn parse_oid(der: &[u8]) -> anyhow::Result<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut arc: u64 = 0;
    for (i, byte) in der.iter().enumerate() {
        arc = arc
            .checked_mul(128)
            .ok_or_else(|| anyhow!("OID arc too large"))?
            | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                // The first subidentifier packs the first two arcs.
                let first = (arc / 40).min(2);
                arcs.push(first);
                arcs.push(arc - first * 40);
            } else {
                arcs.push(arc);
            }
            arc = 0;
        } else if i + 1 == der.len() {
            bail!("truncated OID");
        }
    }
    if arcs.is_empty() {
        bail!("empty OID");
    }
    Ok(arcs)
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    tls::write_atomic(path, text.as_bytes(), secret)
        .with_context(|| format!("writing {}", path.display()))
}

fn cluster_files(dir: &Path, node: &Node) -> ClusterTls {
    ClusterTls {
        ca: dir.join(CA_CERT),
        cert: node.cert.clone(),
        key: node.key.clone(),
    }
}

/// A path as a shell word.
fn shell(path: &Path) -> String {
    let text = path.to_string_lossy();
    shlex::try_quote(&text)
        .map(|quoted| quoted.into_owned())
        .unwrap_or_else(|_| text.into_owned())
}

fn san_text(san: &SanType) -> String {
    match san {
        SanType::DnsName(name) => name.as_str().to_string(),
        SanType::IpAddress(ip) => ip.to_string(),
        other => format!("{other:?}"),
    }
}

/// Prints what was written and the flags each node needs.
fn report(args: &Args, nodes: &[Node], new_ca: bool) {
    let dir = args.out.as_path();
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if new_ca {
        println!(
            "wrote {}  cluster CA certificate: every node trusts it",
            ca_cert.display()
        );
        println!(
            "wrote {}  cluster CA key: signs node certificates; keep it off the nodes",
            ca_key.display()
        );
    } else {
        println!(
            "using {} and {}  (existing cluster CA)",
            ca_cert.display(),
            ca_key.display()
        );
    }
    for node in nodes {
        let names: Vec<String> = node.sans.iter().map(san_text).collect();
        println!(
            "wrote {} and {}  node {}: {}; valid {} days",
            node.cert.display(),
            node.key.display(),
            node.name,
            names.join(", "),
            args.days
        );
    }
    println!();
    println!("Start each node with its files:");
    for node in nodes {
        println!(
            "  {}: --repl-ca {} --repl-cert {} --repl-key {}",
            node.name,
            shell(&ca_cert),
            shell(&node.cert),
            shell(&node.key)
        );
    }
}

/// After a new CA, names the certificates left in `dir` that it did not
/// sign (they belonged to a replaced CA and no longer verify).
fn warn_stale(dir: &Path, nodes: &[Node]) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut stale = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let is_cert = path.extension().is_some_and(|e| e == "crt");
        let ours =
            path.file_name().is_some_and(|f| f == CA_CERT) || nodes.iter().any(|n| n.cert == path);
        if !is_cert || ours {
            continue;
        }
        let files = ClusterTls {
            ca: dir.join(CA_CERT),
            cert: path.clone(),
            key: path.with_extension("key"),
        };
        if files.load().is_err() {
            stale.push(path.display().to_string());
        }
    }
    if !stale.is_empty() {
        stale.sort();
        eprintln!(
            "warning: these certificates are not valid under the new CA; issue new ones for \
             their nodes: {}",
            stale.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn oids_parse() {
        assert_eq!(parse_oid(&[0x55, 0x04, 0x03]).unwrap(), vec![2, 5, 4, 3]);
        // 1.2.840.113549.1.9.1 (emailAddress)
        let email = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
        assert_eq!(
            parse_oid(&email).unwrap(),
            vec![1, 2, 840, 113_549, 1, 9, 1]
        );
        assert!(parse_oid(&[0x86]).is_err());
    }

    #[test]
    fn node_names_are_checked() {
        for good in ["n1", "node-2", "db1.example.com"] {
            check_node_name(good).unwrap();
        }
        for bad in ["", "ca", "CA", "../x", "a/b", "-n", "n.", "10.0.0.1", "n 1"] {
            assert!(check_node_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(san_of("10.1.2.3").unwrap(), SanType::IpAddress(_)));
        assert!(matches!(san_of("::1").unwrap(), SanType::IpAddress(_)));
        assert!(matches!(san_of("db.example").unwrap(), SanType::DnsName(_)));
        assert!(san_of("not a name").is_err());
    }

    /// A CA whose subject this tool did not write (several attributes,
    /// PrintableString and UTF8String) is read back exactly: what is
    /// signed with it verifies.
    #[test]
    fn foreign_ca_subject_is_reproduced() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            DnValue::PrintableString(PrintableString::try_from("DE").unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Grüne Wiese GmbH");
        params
            .distinguished_name
            .push(DnType::CommonName, "ops root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_key_id(cert.der()).unwrap(),
            Some(params.key_identifier(&key))
        );
        let (cert_path, key_path) = (dir.path().join(CA_CERT), dir.path().join(CA_KEY));
        fs::write(&cert_path, cert.pem()).unwrap();
        fs::write(&key_path, key.serialize_pem()).unwrap();

        let ca = load_ca(&cert_path, &key_path).unwrap();
        let node = Node {
            name: "n1".into(),
            sans: vec![san_of("n1").unwrap()],
            cert: dir.path().join("n1.crt"),
            key: dir.path().join("n1.key"),
        };
        let (signed, _) = issue(&ca, &node, days_since_epoch().unwrap(), 30).unwrap();
        check_signed_by(&ca, &signed).unwrap();
    }

    #[test]
    fn ca_key_of_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let today = days_since_epoch().unwrap();
        let (first, second) = (new_ca(today, 10).unwrap(), new_ca(today, 10).unwrap());
        let (cert_path, key_path) = (dir.path().join(CA_CERT), dir.path().join(CA_KEY));
        fs::write(&cert_path, &first.new_pem.unwrap().0).unwrap();
        fs::write(&key_path, &second.new_pem.unwrap().1).unwrap();
        let err = load_ca(&cert_path, &key_path).err().unwrap().to_string();
        assert!(err.contains("ca.key does not belong to"), "{err}");
    }
}
