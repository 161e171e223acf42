//! A pod's volumes as a kubelet sets them up: `configMap` and `secret` volumes written with the
//! kubelet's atomic layout (the files in a `..<timestamp>` directory, a `..data` symlink to it,
//! and one symlink per top-level path into `..data`), `emptyDir` as a directory that lives as
//! long as the pod; and each container's `volumeMounts` (`readOnly`, `subPath`) as bind mounts
//! into its own mount namespace.
//!
//! Other volume types are refused with a message naming the volume, where a real kubelet would
//! mount them: the testbed is stricter, never more lenient.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::{Api, Client};

use super::process::Mount;

/// The mode of a projected file when the volume names none (0644, the API's default).
const DEFAULT_MODE: u32 = 0o644;

/// Writes every volume of `pod` under `pod_dir/volumes/`; the host directory of each, by name,
/// or why one cannot be set up (the message a kubelet puts in its `FailedMount` Event).
pub async fn set_up(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<HashMap<String, PathBuf>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut dirs = HashMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let failed = |why: String| {
            format!(
                "MountVolume.SetUp failed for volume \"{}\" : {why}",
                volume.name
            )
        };
        match contents(client, namespace, volume).await.map_err(failed)? {
            Contents::Empty => {
                std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
            }
            Contents::Files(files) => {
                write_atomically(&dir, &files).map_err(|e| failed(e.to_string()))?;
            }
        }
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(dirs)
}

/// The bind mounts of `container`'s `volumeMounts`, from the volumes [`set_up`] wrote.
pub fn mounts(
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(dir) = volumes.get(&mount.name) else {
            return Err(format!(
                "container {} mounts volume \"{}\", which the pod does not have",
                container.name, mount.name
            ));
        };
        let target = PathBuf::from(&mount.mount_path);
        if !target.is_absolute() {
            return Err(format!(
                "container {}: mountPath \"{}\" is not absolute",
                container.name, mount.mount_path
            ));
        }
        let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            None => dir.clone(),
            Some(sub) => {
                let relative = relative_path(sub).map_err(|why| {
                    format!("container {}: subPath \"{sub}\" {why}", container.name)
                })?;
                // A runtime resolves the subPath once, at container start (through the
                // `..data` symlink, so a later ConfigMap change does not reach it).
                let resolved = dir.join(relative).canonicalize().map_err(|e| {
                    format!(
                        "container {}: subPath \"{sub}\" of volume \"{}\": {e}",
                        container.name, mount.name
                    )
                })?;
                if !resolved.starts_with(dir.canonicalize().unwrap_or_else(|_| dir.clone())) {
                    return Err(format!(
                        "container {}: subPath \"{sub}\" leaves volume \"{}\"",
                        container.name, mount.name
                    ));
                }
                resolved
            }
        };
        mounts.push(Mount {
            source,
            target,
            read_only: mount.read_only == Some(true),
        });
    }
    // Parents before children, so a mount inside another mount's target is not hidden by it.
    mounts.sort_by_key(|m| m.target.components().count());
    Ok(mounts)
}

/// What a volume holds.
enum Contents {
    /// An empty, writable directory (`emptyDir`, or an optional source that is missing).
    Empty,
    /// Files by relative path, each with its mode.
    Files(BTreeMap<PathBuf, (Vec<u8>, u32)>),
}

async fn contents(client: &Client, namespace: &str, volume: &Volume) -> Result<Contents, String> {
    if volume.empty_dir.is_some() {
        return Ok(Contents::Empty);
    }
    if let Some(source) = &volume.config_map {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let Some(map) = get(&api, &source.name).await? else {
            return missing("configmap", &source.name, source.optional);
        };
        let mut data: BTreeMap<String, Vec<u8>> = map
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            map.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        let mode = mode_of(source.default_mode);
        let files = project(
            &data,
            source.items.as_deref(),
            mode,
            source.optional,
            "config",
        )?;
        return Ok(Contents::Files(files));
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let Some(secret) = get(&api, &name).await? else {
            return missing("secret", &name, source.optional);
        };
        let mut data: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        data.extend(
            secret
                .string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        let mode = mode_of(source.default_mode);
        let files = project(
            &data,
            source.items.as_deref(),
            mode,
            source.optional,
            "secret",
        )?;
        return Ok(Contents::Files(files));
    }
    Err(format!(
        "the testbed kubelet mounts only configMap, secret and emptyDir volumes, not {}",
        volume_type(volume)
    ))
}

async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, String>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })
}

fn missing(kind: &str, name: &str, optional: Option<bool>) -> Result<Contents, String> {
    if optional == Some(true) {
        Ok(Contents::Empty)
    } else {
        Err(format!("{kind} \"{name}\" not found"))
    }
}

/// The files of a volume: every key, or only the listed `items` at their paths.
fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    optional: Option<bool>,
    what: &str,
) -> Result<BTreeMap<PathBuf, (Vec<u8>, u32)>, String> {
    let Some(items) = items else {
        return Ok(data
            .iter()
            .map(|(key, value)| (PathBuf::from(key), (value.clone(), mode)))
            .collect());
    };
    let mut files = BTreeMap::new();
    for item in items {
        let Some(value) = data.get(&item.key) else {
            if optional == Some(true) {
                continue;
            }
            return Err(format!(
                "{what} references non-existent {what} key: {}",
                item.key
            ));
        };
        let path = relative_path(&item.path)
            .map_err(|why| format!("item path \"{}\" {why}", item.path))?;
        files.insert(
            path,
            (value.clone(), item.mode.map_or(mode, |m| mode_of(Some(m)))),
        );
    }
    Ok(files)
}

fn mode_of(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(DEFAULT_MODE, |m| m & 0o777)
}

/// A path that stays inside its volume: relative, without `..`.
fn relative_path(path: &str) -> Result<PathBuf, &'static str> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        return Err("must be a relative path");
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("must not contain '..'");
    }
    Ok(path)
}

/// Writes `files` into a fresh `..<n>` directory, points `..data` at it in one rename and
/// removes the previous one, as the kubelet's AtomicWriter does: a reader sees the old set or
/// the new one, never a mix.
fn write_atomically(dir: &Path, files: &BTreeMap<PathBuf, (Vec<u8>, u32)>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh)?;
    for (path, (bytes, mode)) in files {
        let file = fresh.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
    }
    let data = dir.join("..data");
    let previous = std::fs::read_link(&data).ok();
    let link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&stamp, &link)?;
    std::fs::rename(&link, &data)?;
    for top in files.keys().filter_map(|p| p.components().next()) {
        let name = top.as_os_str();
        let entry = dir.join(name);
        if std::fs::symlink_metadata(&entry).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &entry)?;
        }
    }
    // Keys the new set no longer has: their symlinks would dangle.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let shown = name.to_string_lossy();
        if !shown.starts_with("..") && !files.keys().any(|p| p.starts_with(&name)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(previous) = previous.filter(|p| p.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(previous));
    }
    Ok(())
}

fn volume_type(volume: &Volume) -> &'static str {
    let value = serde_json::to_value(volume).unwrap_or_default();
    const TYPES: &[&str] = &[
        "hostPath",
        "persistentVolumeClaim",
        "projected",
        "downwardAPI",
        "ephemeral",
        "csi",
        "image",
        "nfs",
    ];
    TYPES
        .iter()
        .find(|t| value.get(**t).is_some())
        .copied()
        .unwrap_or("this type")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
        entries
            .iter()
            .map(|(p, v)| (PathBuf::from(p), (v.as_bytes().to_vec(), DEFAULT_MODE)))
            .collect()
    }

    #[test]
    fn a_rewrite_swaps_the_whole_set_and_drops_removed_keys() {
        let dir = std::env::temp_dir().join(format!("maos-vol-{}", uuid::Uuid::new_v4().simple()));
        write_atomically(&dir, &files(&[("a", "1"), ("b", "2")])).expect("first write");
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "1");
        assert!(
            std::fs::symlink_metadata(dir.join("a"))
                .expect("a")
                .is_symlink()
        );
        write_atomically(&dir, &files(&[("a", "3")])).expect("second write");
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "3");
        assert!(
            std::fs::symlink_metadata(dir.join("b")).is_err(),
            "b went with its key"
        );
        let stamps = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(stamps, 1, "the previous set is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn items_choose_keys_and_paths_and_a_missing_key_is_named() {
        let data: BTreeMap<String, Vec<u8>> =
            [("k".to_owned(), b"v".to_vec())].into_iter().collect();
        let item = |key: &str, path: &str| KeyToPath {
            key: key.into(),
            path: path.into(),
            mode: Some(0o600),
        };
        let files = project(
            &data,
            Some(&[item("k", "sub/file")]),
            DEFAULT_MODE,
            None,
            "config",
        )
        .expect("projected");
        assert_eq!(
            files.get(Path::new("sub/file")),
            Some(&(b"v".to_vec(), 0o600))
        );
        let err = project(
            &data,
            Some(&[item("nope", "x")]),
            DEFAULT_MODE,
            None,
            "config",
        )
        .expect_err("a missing key");
        assert!(err.contains("nope"), "{err}");
        assert!(
            project(
                &data,
                Some(&[item("nope", "x")]),
                DEFAULT_MODE,
                Some(true),
                "config"
            )
            .is_ok()
        );
        let err = project(
            &data,
            Some(&[item("k", "../x")]),
            DEFAULT_MODE,
            None,
            "config",
        )
        .expect_err("a path leaving the volume");
        assert!(err.contains(".."), "{err}");
    }
}
