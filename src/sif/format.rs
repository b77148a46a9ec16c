//! SIF on-disk layout: constants, enumerations and byte encoding of the global header and the
//! object descriptors. Everything is little-endian and packed (see the SIF reference, section 1).

use std::fmt;

/// Length of the global header.
pub const HEADER_LEN: usize = 128;
/// Length of one (packed) object descriptor.
pub const DESCRIPTOR_LEN: usize = 585;
/// Length of the `Extra` area of a descriptor.
pub const EXTRA_LEN: usize = 384;
/// Length of the `Name` field of a descriptor.
pub const NAME_LEN: usize = 128;
/// Length of the launch script field of the header (NUL padded, so at most 31 bytes of text).
pub const LAUNCH_SCRIPT_LEN: usize = 32;
/// The magic string as stored in the header (with its NUL).
pub const MAGIC: &[u8; 10] = b"SIF_MAGIC\0";
/// The only supported format version, as text.
pub const VERSION: &str = "01";
/// Default position of the descriptor table.
pub const DEFAULT_DESCRIPTORS_OFFSET: u64 = 4096;
/// Default descriptor capacity.
pub const DEFAULT_DESCRIPTORS_TOTAL: u64 = 48;
/// Data offset of the sif v2 writer: 4096 + 48 * 585.
pub const V2_DATA_OFFSET: u64 = DEFAULT_DESCRIPTORS_OFFSET + DEFAULT_DESCRIPTORS_TOTAL * 585;
/// Data offset of the Singularity ≤ 3.8 (sif v1) writer.
pub const LEGACY_DATA_OFFSET: u64 = 32768;
/// Alignment of partitions (and of every object in the legacy layout).
pub const PARTITION_ALIGNMENT: u64 = 4096;
/// Bit marking a group ID (in `GroupID` and in group links of `LinkedID`).
pub const GROUP_FLAG: u32 = 0xF000_0000;
/// Go's zero `time.Time` as Unix seconds: what deterministic images store as timestamps.
pub const GO_ZERO_TIME: i64 = -62_135_596_800;
/// Apptainer's format sniffing looks for the magic in this many leading bytes.
pub const SNIFF_LEN: usize = 2048;

// ---------------------------------------------------------------------------------------------
// Enumerations

/// Kind of a data object (`DataType`, stored as i32 = 0x4000 + n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Deffile,
    EnvVar,
    Labels,
    Partition,
    Signature,
    GenericJson,
    Generic,
    CryptoMessage,
    Sbom,
    OciRootIndex,
    OciBlob,
    Unknown(i32),
}

impl DataType {
    pub fn code(self) -> i32 {
        match self {
            DataType::Deffile => 0x4001,
            DataType::EnvVar => 0x4002,
            DataType::Labels => 0x4003,
            DataType::Partition => 0x4004,
            DataType::Signature => 0x4005,
            DataType::GenericJson => 0x4006,
            DataType::Generic => 0x4007,
            DataType::CryptoMessage => 0x4008,
            DataType::Sbom => 0x4009,
            DataType::OciRootIndex => 0x400A,
            DataType::OciBlob => 0x400B,
            DataType::Unknown(c) => c,
        }
    }

    pub fn from_code(code: i32) -> DataType {
        match code {
            0x4001 => DataType::Deffile,
            0x4002 => DataType::EnvVar,
            0x4003 => DataType::Labels,
            0x4004 => DataType::Partition,
            0x4005 => DataType::Signature,
            0x4006 => DataType::GenericJson,
            0x4007 => DataType::Generic,
            0x4008 => DataType::CryptoMessage,
            0x4009 => DataType::Sbom,
            0x400A => DataType::OciRootIndex,
            0x400B => DataType::OciBlob,
            c => DataType::Unknown(c),
        }
    }

    /// The label `siftool list` prints (labels of the sif v2 library).
    pub fn label(self) -> &'static str {
        match self {
            DataType::Deffile => "Def.FILE",
            DataType::EnvVar => "Env.Vars",
            DataType::Labels => "JSON.Labels",
            DataType::Partition => "FS",
            DataType::Signature => "Signature",
            DataType::GenericJson => "JSON.Generic",
            DataType::Generic => "Generic/Raw",
            DataType::CryptoMessage => "Cryptographic Message",
            DataType::Sbom => "SBOM",
            DataType::OciRootIndex => "OCI.RootIndex",
            DataType::OciBlob => "OCI.Blob",
            DataType::Unknown(_) => "Unknown",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Filesystem of a partition (`Fstype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    Squashfs,
    Ext3,
    ImmuObj,
    Raw,
    EncryptedSquashfs,
    GocryptfsSquashfs,
    Unknown(i32),
}

impl FsType {
    pub fn code(self) -> i32 {
        match self {
            FsType::Squashfs => 1,
            FsType::Ext3 => 2,
            FsType::ImmuObj => 3,
            FsType::Raw => 4,
            FsType::EncryptedSquashfs => 5,
            FsType::GocryptfsSquashfs => 6,
            FsType::Unknown(c) => c,
        }
    }

    pub fn from_code(code: i32) -> FsType {
        match code {
            1 => FsType::Squashfs,
            2 => FsType::Ext3,
            3 => FsType::ImmuObj,
            4 => FsType::Raw,
            5 => FsType::EncryptedSquashfs,
            6 => FsType::GocryptfsSquashfs,
            c => FsType::Unknown(c),
        }
    }

    /// The label siftool prints.
    pub fn label(self) -> &'static str {
        match self {
            FsType::Squashfs => "Squashfs",
            FsType::Ext3 => "Ext3",
            FsType::ImmuObj => "Archive",
            FsType::Raw => "Raw",
            FsType::EncryptedSquashfs => "Encrypted squashfs",
            FsType::GocryptfsSquashfs => "Gocryptfs squashfs",
            FsType::Unknown(_) => "Unknown",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Role of a partition (`Parttype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartType {
    System,
    PrimSys,
    Data,
    Overlay,
    Unknown(i32),
}

impl PartType {
    pub fn code(self) -> i32 {
        match self {
            PartType::System => 1,
            PartType::PrimSys => 2,
            PartType::Data => 3,
            PartType::Overlay => 4,
            PartType::Unknown(c) => c,
        }
    }

    pub fn from_code(code: i32) -> PartType {
        match code {
            1 => PartType::System,
            2 => PartType::PrimSys,
            3 => PartType::Data,
            4 => PartType::Overlay,
            c => PartType::Unknown(c),
        }
    }

    /// The label siftool prints (`*System` for the primary partition).
    pub fn label(self) -> &'static str {
        match self {
            PartType::System => "System",
            PartType::PrimSys => "*System",
            PartType::Data => "Data",
            PartType::Overlay => "Overlay",
            PartType::Unknown(_) => "Unknown",
        }
    }
}

impl fmt::Display for PartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Hash used by a signature object (`Hashtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashType {
    Sha256,
    Sha384,
    Sha512,
    Blake2s256,
    Blake2b256,
    Unknown(i32),
}

impl HashType {
    pub fn code(self) -> i32 {
        match self {
            HashType::Sha256 => 1,
            HashType::Sha384 => 2,
            HashType::Sha512 => 3,
            HashType::Blake2s256 => 4,
            HashType::Blake2b256 => 5,
            HashType::Unknown(c) => c,
        }
    }

    pub fn from_code(code: i32) -> HashType {
        match code {
            1 => HashType::Sha256,
            2 => HashType::Sha384,
            3 => HashType::Sha512,
            4 => HashType::Blake2s256,
            5 => HashType::Blake2b256,
            c => HashType::Unknown(c),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            HashType::Sha256 => "SHA-256",
            HashType::Sha384 => "SHA-384",
            HashType::Sha512 => "SHA-512",
            HashType::Blake2s256 => "BLAKE2s-256",
            HashType::Blake2b256 => "BLAKE2b-256",
            HashType::Unknown(_) => "Unknown",
        }
    }
}

/// Architecture code: two ASCII digits as stored in the header (@45) and partition extras (@8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arch(pub [u8; 2]);

const ARCHES: &[(&[u8; 2], &str)] = &[
    (b"00", "unknown"),
    (b"01", "386"),
    (b"02", "amd64"),
    (b"03", "arm"),
    (b"04", "arm64"),
    (b"05", "ppc64"),
    (b"06", "ppc64le"),
    (b"07", "mips"),
    (b"08", "mipsle"),
    (b"09", "mips64"),
    (b"10", "mips64le"),
    (b"11", "s390x"),
    (b"12", "riscv64"),
    (b"13", "loong64"),
];

impl Arch {
    pub const UNKNOWN: Arch = Arch(*b"00");
    pub const I386: Arch = Arch(*b"01");
    pub const AMD64: Arch = Arch(*b"02");
    pub const ARM: Arch = Arch(*b"03");
    pub const ARM64: Arch = Arch(*b"04");
    pub const PPC64: Arch = Arch(*b"05");
    pub const PPC64LE: Arch = Arch(*b"06");
    pub const MIPS: Arch = Arch(*b"07");
    pub const MIPSLE: Arch = Arch(*b"08");
    pub const MIPS64: Arch = Arch(*b"09");
    pub const MIPS64LE: Arch = Arch(*b"10");
    pub const S390X: Arch = Arch(*b"11");
    pub const RISCV64: Arch = Arch(*b"12");
    pub const LOONG64: Arch = Arch(*b"13");

    /// Go's GOARCH name ("amd64", "arm64", ...); "unknown" for "00" and unrecognised codes.
    pub fn go_name(self) -> &'static str {
        ARCHES
            .iter()
            .find(|(code, _)| **code == self.0)
            .map(|(_, name)| *name)
            .unwrap_or("unknown")
    }

    /// Code for a GOARCH name; `None` for names SIF has no code for.
    pub fn from_go_name(name: &str) -> Option<Arch> {
        ARCHES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(code, _)| Arch(**code))
    }

    /// The architecture this program runs on.
    pub fn host() -> Arch {
        Self::from_rust_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
    }

    fn from_rust_arch(arch: &str, little_endian: bool) -> Arch {
        match arch {
            "x86_64" => Arch::AMD64,
            "x86" => Arch::I386,
            "aarch64" => Arch::ARM64,
            "arm" => Arch::ARM,
            "powerpc64" if little_endian => Arch::PPC64LE,
            "powerpc64" => Arch::PPC64,
            "s390x" => Arch::S390X,
            "riscv64" => Arch::RISCV64,
            "loongarch64" => Arch::LOONG64,
            "mips" if little_endian => Arch::MIPSLE,
            "mips" => Arch::MIPS,
            "mips64" if little_endian => Arch::MIPS64LE,
            "mips64" => Arch::MIPS64,
            _ => Arch::UNKNOWN,
        }
    }

    pub fn is_unknown(self) -> bool {
        self.go_name() == "unknown"
    }

    fn decode(b: &[u8]) -> Arch {
        Arch([b[0], b[1]])
    }

    fn encode(self, out: &mut [u8]) {
        out[0] = self.0[0];
        out[1] = self.0[1];
        out[2] = 0;
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.go_name())
    }
}

// ---------------------------------------------------------------------------------------------
// Header

/// The global header (128 bytes at offset 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Launch script, without its NUL padding.
    pub launch_script: Vec<u8>,
    /// Format version text ("01").
    pub version: String,
    /// Architecture of the primary partition ("00" = unknown).
    pub arch: Arch,
    /// Image UUID, 16 raw bytes in RFC 4122 order (all zero for deterministic images).
    pub id: [u8; 16],
    pub created_at: i64,
    pub modified_at: i64,
    pub descriptors_free: i64,
    pub descriptors_total: i64,
    pub descriptors_offset: i64,
    pub descriptors_size: i64,
    pub data_offset: i64,
    pub data_size: i64,
}

impl Header {
    /// The UUID in canonical text form.
    pub fn id_string(&self) -> String {
        format_uuid(&self.id)
    }

    /// Decode the 128 header bytes. The caller has already checked the magic.
    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            launch_script: trim_nul(&b[0..32]).to_vec(),
            version: String::from_utf8_lossy(trim_nul(&b[42..45])).into_owned(),
            arch: Arch::decode(&b[45..48]),
            id: b[48..64].try_into().unwrap(),
            created_at: le_i64(b, 64),
            modified_at: le_i64(b, 72),
            descriptors_free: le_i64(b, 80),
            descriptors_total: le_i64(b, 88),
            descriptors_offset: le_i64(b, 96),
            descriptors_size: le_i64(b, 104),
            data_offset: le_i64(b, 112),
            data_size: le_i64(b, 120),
        }
    }

    /// Encode to 128 bytes. The launch script is cut to 31 bytes so a NUL always follows.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let ls = &self.launch_script[..self.launch_script.len().min(LAUNCH_SCRIPT_LEN - 1)];
        b[..ls.len()].copy_from_slice(ls);
        b[32..42].copy_from_slice(MAGIC);
        let v = self.version.as_bytes();
        let n = v.len().min(2);
        b[42..42 + n].copy_from_slice(&v[..n]);
        self.arch.encode(&mut b[45..48]);
        b[48..64].copy_from_slice(&self.id);
        put_i64(&mut b, 64, self.created_at);
        put_i64(&mut b, 72, self.modified_at);
        put_i64(&mut b, 80, self.descriptors_free);
        put_i64(&mut b, 88, self.descriptors_total);
        put_i64(&mut b, 96, self.descriptors_offset);
        put_i64(&mut b, 104, self.descriptors_size);
        put_i64(&mut b, 112, self.data_offset);
        put_i64(&mut b, 120, self.data_size);
        b
    }
}

// ---------------------------------------------------------------------------------------------
// Descriptor

/// Parsed `Extra` of a partition descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub fs_type: FsType,
    pub part_type: PartType,
    pub arch: Arch,
}

/// Parsed `Extra` of a signature descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureInfo {
    pub hash_type: HashType,
    /// First 20 bytes of `Entity`: OpenPGP v4 fingerprint; all zero when there is none (DSSE).
    pub fingerprint: [u8; 20],
}

/// Parsed `Extra` of a cryptographic message descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoMessageInfo {
    /// 1 OpenPGP, 2 PEM.
    pub format_type: i32,
    /// 0x100 clear signature, 0x200 RSA-OAEP.
    pub message_type: i32,
}

/// Target of a descriptor's `LinkedID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    None,
    Object(u32),
    Group(u32),
}

impl Link {
    pub fn from_raw(raw: u32) -> Link {
        if raw == 0 {
            Link::None
        } else if raw & GROUP_FLAG == GROUP_FLAG {
            Link::Group(raw & !GROUP_FLAG)
        } else {
            Link::Object(raw)
        }
    }

    pub fn raw(self) -> u32 {
        match self {
            Link::None => 0,
            Link::Object(id) => id,
            Link::Group(g) => g | GROUP_FLAG,
        }
    }
}

/// One used object descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub data_type: DataType,
    /// 1-based object ID (slot index + 1).
    pub id: u32,
    /// Raw group ID, with the 0xF0000000 bit; 0xF0000000 alone = no group.
    pub group_id: u32,
    /// Raw link: 0 none, object ID, or group | 0xF0000000.
    pub linked_id: u32,
    pub offset: u64,
    pub size: u64,
    pub size_with_padding: u64,
    pub created_at: i64,
    pub modified_at: i64,
    pub name: String,
    /// Raw `Extra` area (384 bytes).
    pub extra: Vec<u8>,
    /// Parsed partition extra (DataType::Partition only).
    pub partition: Option<PartitionInfo>,
    /// Parsed signature extra (DataType::Signature only).
    pub signature: Option<SignatureInfo>,
    /// Parsed crypto message extra (DataType::CryptoMessage only).
    pub crypto_message: Option<CryptoMessageInfo>,
    /// SBOM format code (DataType::Sbom only).
    pub sbom_format: Option<i32>,
    /// Digest `sha256:…` of OCI blobs / root indexes.
    pub oci_digest: Option<String>,
}

impl Descriptor {
    /// Group number without the flag bit; `None` when the object is in no group.
    pub fn group(&self) -> Option<u32> {
        match self.group_id & !GROUP_FLAG {
            0 => None,
            g => Some(g),
        }
    }

    pub fn link(&self) -> Link {
        Link::from_raw(self.linked_id)
    }

    /// End offset of the object data.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }

    /// The TYPE column of `siftool list`, e.g. `FS (Squashfs/*System/amd64)`.
    pub fn type_label(&self) -> String {
        match self.data_type {
            DataType::Partition => match &self.partition {
                Some(p) => format!("FS ({}/{}/{})", p.fs_type, p.part_type, p.arch),
                None => "FS".to_string(),
            },
            DataType::Signature => match &self.signature {
                Some(s) => format!("Signature ({})", s.hash_type.label()),
                None => "Signature".to_string(),
            },
            DataType::CryptoMessage => {
                let (f, m) = self
                    .crypto_message
                    .map(|c| (c.format_type, c.message_type))
                    .unwrap_or((0, 0));
                let f = match f {
                    1 => "OpenPGP",
                    2 => "PEM",
                    _ => "Unknown",
                };
                let m = match m {
                    0x100 => "Clear Signature",
                    0x200 => "RSA-OAEP",
                    _ => "Unknown",
                };
                format!("Cryptographic Message ({f}/{m})")
            }
            DataType::Sbom => format!(
                "SBOM ({})",
                sbom_format_name(self.sbom_format.unwrap_or(0)).unwrap_or("Unknown")
            ),
            t => t.label().to_string(),
        }
    }

    /// Decode one 585-byte slot; `None` for an unused slot.
    pub(crate) fn decode(b: &[u8]) -> Option<RawDescriptor> {
        debug_assert_eq!(b.len(), DESCRIPTOR_LEN);
        if b[4] == 0 {
            return None;
        }
        Some(RawDescriptor {
            data_type: le_i32(b, 0),
            id: le_u32(b, 5),
            group_id: le_u32(b, 9),
            linked_id: le_u32(b, 13),
            offset: le_i64(b, 17),
            size: le_i64(b, 25),
            size_with_padding: le_i64(b, 33),
            created_at: le_i64(b, 41),
            modified_at: le_i64(b, 49),
            name: String::from_utf8_lossy(trim_nul(&b[73..73 + NAME_LEN])).into_owned(),
            extra: b[201..201 + EXTRA_LEN].to_vec(),
        })
    }

    /// Build a descriptor from validated raw fields, parsing the type-specific extra.
    pub(crate) fn from_raw(r: RawDescriptor, offset: u64, size: u64, swp: u64) -> Descriptor {
        let data_type = DataType::from_code(r.data_type);
        let e = &r.extra;
        let partition = (data_type == DataType::Partition).then(|| PartitionInfo {
            fs_type: FsType::from_code(le_i32(e, 0)),
            part_type: PartType::from_code(le_i32(e, 4)),
            arch: Arch::decode(&e[8..11]),
        });
        let signature = (data_type == DataType::Signature).then(|| SignatureInfo {
            hash_type: HashType::from_code(le_i32(e, 0)),
            fingerprint: e[4..24].try_into().unwrap(),
        });
        let crypto_message = (data_type == DataType::CryptoMessage).then(|| CryptoMessageInfo {
            format_type: le_i32(e, 0),
            message_type: le_i32(e, 4),
        });
        let sbom_format = (data_type == DataType::Sbom).then(|| le_i32(e, 0));
        let oci_digest = matches!(data_type, DataType::OciBlob | DataType::OciRootIndex)
            .then(|| String::from_utf8_lossy(trim_nul(e)).into_owned());
        Descriptor {
            data_type,
            id: r.id,
            group_id: r.group_id,
            linked_id: r.linked_id,
            offset,
            size,
            size_with_padding: swp,
            created_at: r.created_at,
            modified_at: r.modified_at,
            name: r.name,
            extra: r.extra,
            partition,
            signature,
            crypto_message,
            sbom_format,
            oci_digest,
        }
    }

    /// Encode as a used 585-byte slot (UID/GID written as 0).
    pub(crate) fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        put_i32(&mut b, 0, self.data_type.code());
        b[4] = 1;
        b[5..9].copy_from_slice(&self.id.to_le_bytes());
        b[9..13].copy_from_slice(&self.group_id.to_le_bytes());
        b[13..17].copy_from_slice(&self.linked_id.to_le_bytes());
        put_i64(&mut b, 17, self.offset as i64);
        put_i64(&mut b, 25, self.size as i64);
        put_i64(&mut b, 33, self.size_with_padding as i64);
        put_i64(&mut b, 41, self.created_at);
        put_i64(&mut b, 49, self.modified_at);
        let name = self.name.as_bytes();
        let n = name.len().min(NAME_LEN - 1);
        b[73..73 + n].copy_from_slice(&name[..n]);
        let n = self.extra.len().min(EXTRA_LEN);
        b[201..201 + n].copy_from_slice(&self.extra[..n]);
        b
    }
}

/// Descriptor fields as stored, before validation.
#[derive(Debug, Clone)]
pub(crate) struct RawDescriptor {
    pub data_type: i32,
    pub id: u32,
    pub group_id: u32,
    pub linked_id: u32,
    pub offset: i64,
    pub size: i64,
    pub size_with_padding: i64,
    pub created_at: i64,
    pub modified_at: i64,
    pub name: String,
    pub extra: Vec<u8>,
}

/// Name of an SBOM format code.
pub fn sbom_format_name(code: i32) -> Option<&'static str> {
    Some(match code {
        1 => "cyclonedx-json",
        2 => "cyclonedx-xml",
        3 => "github-json",
        4 => "spdx-json",
        5 => "spdx-rdf",
        6 => "spdx-tag-value",
        7 => "spdx-yaml",
        8 => "syft-json",
        _ => return None,
    })
}

/// Partition `Extra` bytes.
pub fn partition_extra(fs: FsType, part: PartType, arch: Arch) -> Vec<u8> {
    let mut e = vec![0u8; EXTRA_LEN];
    put_i32(&mut e, 0, fs.code());
    put_i32(&mut e, 4, part.code());
    arch.encode(&mut e[8..11]);
    e
}

/// Canonical text form of a UUID.
pub fn format_uuid(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------------------------------------
// Little helpers

pub(crate) fn trim_nul(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

pub(crate) fn le_i32(b: &[u8], off: usize) -> i32 {
    i32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub(crate) fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

pub(crate) fn le_i64(b: &[u8], off: usize) -> i64 {
    i64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

pub(crate) fn put_i32(b: &mut [u8], off: usize, v: i32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_i64(b: &mut [u8], off: usize, v: i64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for (code, name) in ARCHES {
            let a = Arch(**code);
            assert_eq!(a.go_name(), *name);
            assert_eq!(Arch::from_go_name(name), Some(a));
        }
        assert_eq!(Arch(*b"99").go_name(), "unknown");
        assert_eq!(Arch::from_go_name("sparc"), None);
        assert_eq!(Arch::from_rust_arch("x86_64", true), Arch::AMD64);
        assert_eq!(Arch::from_rust_arch("aarch64", true), Arch::ARM64);
        assert_eq!(Arch::from_rust_arch("powerpc64", true), Arch::PPC64LE);
        assert_eq!(Arch::from_rust_arch("powerpc64", false), Arch::PPC64);
        assert_eq!(Arch::from_rust_arch("loongarch64", true), Arch::LOONG64);
        assert_eq!(Arch::from_rust_arch("x86", true), Arch::I386);
        assert!(!Arch::host().is_unknown() || cfg!(not(target_arch = "x86_64")));
    }

    #[test]
    fn codes_round_trip() {
        for c in 0x4000..0x400D {
            assert_eq!(DataType::from_code(c).code(), c);
        }
        for c in 0..8 {
            assert_eq!(FsType::from_code(c).code(), c);
            assert_eq!(PartType::from_code(c).code(), c);
            assert_eq!(HashType::from_code(c).code(), c);
        }
        assert_eq!(DataType::GenericJson.label(), "JSON.Generic");
        assert_eq!(DataType::Deffile.label(), "Def.FILE");
    }

    #[test]
    fn layout_constants() {
        assert_eq!(V2_DATA_OFFSET, 32176);
        assert_eq!(
            GO_ZERO_TIME.to_le_bytes(),
            [0x00, 0x09, 0x6e, 0x88, 0xf1, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            launch_script: b"#!/usr/bin/env run-singularity\n".to_vec(),
            version: VERSION.to_string(),
            arch: Arch::ARM64,
            id: [7; 16],
            created_at: 5,
            modified_at: 6,
            descriptors_free: 47,
            descriptors_total: 48,
            descriptors_offset: 4096,
            descriptors_size: 48 * 585,
            data_offset: 32176,
            data_size: 10,
        };
        let b = h.encode();
        assert_eq!(&b[32..42], MAGIC);
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn uuid_text() {
        let id = [
            0x3f, 0xa8, 0x02, 0xcc, 0x35, 0x8b, 0x45, 0xe3, 0xbc, 0xc0, 0x69, 0xdc, 0x7a, 0x45,
            0xf9, 0xf8,
        ];
        assert_eq!(format_uuid(&id), "3fa802cc-358b-45e3-bcc0-69dc7a45f9f8");
    }
}
