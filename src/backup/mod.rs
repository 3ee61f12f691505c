//! Air-gapped backups. Today: the archive format ([`archive`]), written and verified as a
//! stream. Export from the mirror, restore into a registry, encryption, split parts,
//! incremental chains and retention build on it.

pub mod archive;
