//! The running driver, asked through NVML (`libnvidia-ml.so.1`, loaded with dlopen at run time
//! by `nvml-wrapper`, so rsing itself does not link against the driver).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nvml_wrapper::Nvml;

use super::Error;

/// One GPU as NVML numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    /// NVML's index (PCI bus order), which is also CUDA's with `CUDA_DEVICE_ORDER=PCI_BUS_ID`.
    pub index: u32,
    /// The N of /dev/nvidiaN.
    pub minor: u32,
    pub uuid: Option<String>,
    pub name: Option<String>,
}

/// What NVML says about the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverInfo {
    pub version: String,
    pub gpus: Vec<Gpu>,
}

/// The symbols rsing calls; a library without one of them is refused before nvml-wrapper
/// touches it (its `Drop` would panic on a missing `nvmlShutdown`).
const NEEDED: [&str; 7] = [
    "nvmlInit_v2",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex_v2",
    "nvmlDeviceGetMinorNumber",
    "nvmlDeviceGetUUID",
];

/// Loads NVML from `lib` and reads the driver version and the GPUs.
///
/// rsing runs it in a forked child: the driver's library may start threads (a process with
/// more than one thread cannot create the user namespace rsing needs next) and may crash on a
/// broken installation; neither must happen to rsing itself. The unit tests, whose harness
/// is multi-threaded (a fork there could inherit a held malloc lock), query in-process.
pub fn query(lib: &Path) -> Result<DriverInfo, Error> {
    if cfg!(test) {
        query_here(lib)
    } else {
        query_isolated(lib)
    }
}

fn query_isolated(lib: &Path) -> Result<DriverInfo, Error> {
    use nix::unistd::{fork, ForkResult};
    use std::io::{Read, Write};
    let fail = |message: String| Error::Nvml {
        lib: lib.to_path_buf(),
        message,
    };
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| fail(format!("cannot create a pipe: {e}")))?;
    // SAFETY: rsing is single-threaded here (its threads start after the container's fork).
    match unsafe { fork() }.map_err(|e| fail(format!("cannot fork: {e}")))? {
        ForkResult::Child => {
            drop(read);
            let text = encode(&query_here(lib));
            let _ = std::fs::File::from(write).write_all(text.as_bytes());
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(write);
            let mut text = String::new();
            let read_result = std::fs::File::from(read).read_to_string(&mut text);
            let status = nix::sys::wait::waitpid(child, None);
            read_result.map_err(|e| fail(format!("reading the NVML child: {e}")))?;
            let decoded = decode(&text).ok_or_else(|| {
                let how = match status {
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => {
                        format!("killed by {}", sig.as_str())
                    }
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => format!("exit {code}"),
                    other => format!("{other:?}"),
                };
                fail(format!("the NVML query ended abnormally ({how})"))
            })?;
            decoded.map_err(|e| match e {
                Error::Nvml { message, .. } => fail(message),
                other => other,
            })
        }
    }
}

/// One line per fact, tab-separated: `ok VERSION`, `gpu INDEX MINOR UUID NAME`, or
/// `err MESSAGE` (`-` for a missing field).
fn encode(result: &Result<DriverInfo, Error>) -> String {
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    match result {
        Err(e) => format!("err\t{}\n", clean(&e.to_string())),
        Ok(info) => {
            let mut out = format!("ok\t{}\n", clean(&info.version));
            for g in &info.gpus {
                let field = |v: &Option<String>| v.as_deref().map(clean).unwrap_or("-".into());
                out.push_str(&format!(
                    "gpu\t{}\t{}\t{}\t{}\n",
                    g.index,
                    g.minor,
                    field(&g.uuid),
                    field(&g.name)
                ));
            }
            out
        }
    }
}

fn decode(text: &str) -> Option<Result<DriverInfo, Error>> {
    let mut info: Option<DriverInfo> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["err", message] => {
                return Some(Err(Error::Nvml {
                    lib: PathBuf::new(),
                    message: message.to_string(),
                }))
            }
            ["ok", version] => {
                info = Some(DriverInfo {
                    version: version.to_string(),
                    gpus: Vec::new(),
                })
            }
            ["gpu", index, minor, uuid, name] => {
                let opt = |v: &str| (v != "-").then(|| v.to_string());
                info.as_mut()?.gpus.push(Gpu {
                    index: index.parse().ok()?,
                    minor: minor.parse().ok()?,
                    uuid: opt(uuid),
                    name: opt(name),
                });
            }
            _ => return None,
        }
    }
    info.map(Ok)
}

fn query_here(lib: &Path) -> Result<DriverInfo, Error> {
    check_symbols(lib)?;
    let nvml_err = |e: nvml_wrapper::error::NvmlError| Error::Nvml {
        lib: lib.to_path_buf(),
        message: e.to_string(),
    };
    let nvml = Nvml::builder()
        .lib_path(lib.as_os_str())
        .init()
        .map_err(nvml_err)?;
    let version = nvml.sys_driver_version().map_err(nvml_err)?;
    let count = nvml.device_count().map_err(nvml_err)?;
    let mut gpus = Vec::new();
    for index in 0..count {
        let device = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(index, error = %e, "NVML cannot open a GPU; skipped");
                continue;
            }
        };
        let Ok(minor) = device.minor_number() else {
            continue;
        };
        gpus.push(Gpu {
            index,
            minor,
            uuid: device.uuid().ok(),
            name: device.name().ok(),
        });
    }
    nvml.shutdown().map_err(nvml_err)?;
    tracing::debug!(%version, gpus = gpus.len(), lib = %lib.display(), "NVML queried");
    Ok(DriverInfo { version, gpus })
}

fn check_symbols(lib: &Path) -> Result<(), Error> {
    let fail = |message: String| Error::Nvml {
        lib: lib.to_path_buf(),
        message,
    };
    let path = CString::new(lib.as_os_str().as_bytes()).map_err(|e| fail(e.to_string()))?;
    // SAFETY: dlopen/dlsym/dlclose on a NUL-terminated path; the handle is closed below.
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            let err = libc::dlerror();
            let text = if err.is_null() {
                "dlopen failed".to_string()
            } else {
                std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            return Err(fail(text));
        }
        let missing = NEEDED.iter().find(|name| {
            let sym = CString::new(**name).unwrap_or_default();
            libc::dlsym(handle, sym.as_ptr()).is_null()
        });
        libc::dlclose(handle);
        if let Some(name) = missing {
            return Err(fail(format!("the library has no {name}")));
        }
    }
    Ok(())
}

#[cfg(test)]
#[test]
fn the_child_protocol_round_trips() {
    let info = DriverInfo {
        version: "550.54.15".into(),
        gpus: vec![Gpu {
            index: 1,
            minor: 3,
            uuid: Some("GPU-x".into()),
            name: None,
        }],
    };
    assert_eq!(decode(&encode(&Ok(info.clone()))).unwrap().unwrap(), info);
    let err = Error::Nvml {
        lib: "/l".into(),
        message: "bad\tthing".into(),
    };
    let back = decode(&encode(&Err(err))).unwrap().unwrap_err();
    assert!(back.to_string().contains("bad thing"), "{back}");
    assert!(decode("").is_none() && decode("garbage").is_none());
}

/// The kernel module's version (`/sys/module/nvidia/version`), for when NVML cannot be used.
pub fn module_version() -> Option<String> {
    let text = std::fs::read_to_string("/sys/module/nvidia/version").ok()?;
    let v = text.trim();
    (!v.is_empty()).then(|| v.to_string())
}
