//! Moving sections across the relay: the sender cuts a change into messages under the size
//! limit; the receiver gathers them and applies the change whole, or not at all.

use trellis_model::ClusterConfig;

use crate::sections::{EncodedSection, Sections};
use crate::{ConfigDelta, Section};

/// Largest message either side accepts. A message is at most one section over `CHUNK_BYTES`, so
/// this bounds a single section at about 15 MiB (a config of any size fits, cut into sections).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Sections are packed into messages of about this many payload bytes. Small enough that a
/// stream's queue, its encoder's buffer and the peer's window hold little of a large config at
/// once (a thousand streams sending one each must not hold a thousand copies of it), large
/// enough that a config of thousands of sections takes few messages.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// The most a receiver gathers for one change before it gives up on it.
const MAX_PENDING_BYTES: usize = 1024 * 1024 * 1024;

/// The messages carrying one change, made one at a time as they are sent: `upserts` packed in
/// order, `removes` in the last message. Payloads are shared with `upserts`, not copied.
pub fn chunk<'a>(
    version: &'a str,
    base_version: &'a str,
    upserts: &'a [(&'a str, &'a EncodedSection)],
    removes: Vec<String>,
) -> Chunks<'a> {
    Chunks {
        version,
        base_version,
        upserts,
        removes: Some(removes),
    }
}

/// See [`chunk`].
pub struct Chunks<'a> {
    version: &'a str,
    base_version: &'a str,
    /// What is left to send.
    upserts: &'a [(&'a str, &'a EncodedSection)],
    /// Taken by the last message.
    removes: Option<Vec<String>>,
}

impl Iterator for Chunks<'_> {
    type Item = ConfigDelta;

    fn next(&mut self) -> Option<ConfigDelta> {
        self.removes.as_ref()?;
        let mut message = ConfigDelta {
            version: self.version.to_string(),
            base_version: self.base_version.to_string(),
            ..Default::default()
        };
        let mut size = 0;
        while let Some(((name, section), rest)) = self.upserts.split_first() {
            if size > 0 && size + section.payload.len() > CHUNK_BYTES {
                break;
            }
            // Payload, name and the section's own framing (tags, lengths, version).
            size += section.payload.len() + name.len() + 24;
            message.upserts.push(Section {
                name: name.to_string(),
                version: section.version,
                payload: prost::bytes::Bytes::from_owner(section.payload.clone()),
            });
            self.upserts = rest;
        }
        if self.upserts.is_empty() {
            message.removes = self.removes.take().unwrap_or_default();
        } else {
            message.more = true;
        }
        Some(message)
    }
}

/// The agent's side: the sections it runs and the change being gathered.
#[derive(Debug, Default)]
pub struct Receiver {
    held: Sections,
    /// `held` decoded: a change patches it rather than decoding every section again.
    config: ClusterConfig,
    version: String,
    pending: Option<(ConfigDelta, usize)>,
}

impl Receiver {
    /// Starts from a config the agent already runs (its cache).
    pub fn holding(config: &ClusterConfig) -> Self {
        let held = Sections::encode(config);
        Receiver {
            version: held.version(),
            held,
            config: config.clone(),
            pending: None,
        }
    }

    /// The version of the config held; empty when none.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Takes one message. `Ok(None)`: more of this change is to come. `Ok(Some(config))`: the
    /// change is complete and applied; it becomes the config held. `Err`: the change is refused
    /// (the reason is the NACK) and the config held stays as it was.
    /// `check` sees the assembled config before it is taken: its error refuses it too.
    pub fn receive(
        &mut self,
        delta: ConfigDelta,
        check: impl FnOnce(&ClusterConfig) -> Result<(), String>,
    ) -> Result<Option<ClusterConfig>, String> {
        let mut gathered = match self.pending.take() {
            Some((mut gathered, size)) => {
                if gathered.version != delta.version || gathered.base_version != delta.base_version {
                    return Err(format!(
                        "config {} arrived in the middle of config {}; both dropped",
                        delta.version, gathered.version
                    ));
                }
                let size = size + delta.upserts.iter().map(|s| s.payload.len()).sum::<usize>();
                if size > MAX_PENDING_BYTES {
                    return Err(format!(
                        "config {} is larger than {MAX_PENDING_BYTES} bytes",
                        delta.version
                    ));
                }
                gathered.upserts.extend(delta.upserts);
                gathered.removes.extend(delta.removes);
                gathered.more = delta.more;
                (gathered, size)
            }
            None => {
                let size = delta.upserts.iter().map(|s| s.payload.len()).sum();
                (delta, size)
            }
        };
        if gathered.0.more {
            self.pending = Some(gathered);
            return Ok(None);
        }
        let delta = std::mem::take(&mut gathered.0);
        self.apply(delta, check).map(Some)
    }

    fn apply(
        &mut self,
        delta: ConfigDelta,
        check: impl FnOnce(&ClusterConfig) -> Result<(), String>,
    ) -> Result<ClusterConfig, String> {
        let whole = delta.base_version.is_empty();
        if !whole && delta.base_version != self.version {
            return Err(format!(
                "config {} is a change from {}, but this agent holds {}",
                delta.version,
                delta.base_version,
                if self.version.is_empty() { "none" } else { &self.version }
            ));
        }
        let mut changed = Vec::with_capacity(delta.upserts.len());
        let mut upserts = Vec::with_capacity(delta.upserts.len());
        for section in delta.upserts {
            changed.push(section.name.clone());
            let payload: std::sync::Arc<[u8]> = section.payload[..].into();
            // The sender's version is checked, not trusted: a bad one would poison later deltas.
            let version = trellis_base::stable_hash(&payload);
            if version != section.version {
                return Err(format!("config section {:?} does not match its version", section.name));
            }
            upserts.push((section.name, EncodedSection { version, payload }));
        }
        let sections = if whole {
            Sections::from_map(upserts.into_iter().collect(), None)
        } else {
            self.held.with_changes(upserts, &delta.removes)
        };
        let version = sections.version();
        if version != delta.version {
            return Err(format!(
                "config {} assembled to version {version}: a section is missing or extra",
                delta.version
            ));
        }
        let config = if whole {
            sections.decode()?
        } else {
            sections.patch(self.config.clone(), &delta.removes, &changed)?
        };
        check(&config)?;
        self.config = config.clone();
        self.held = sections;
        self.version = version;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
