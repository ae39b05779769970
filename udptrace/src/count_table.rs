//! Reading `udptrace count`'s per-CPU table from user space: each row is read
//! and removed in one step and summed over the CPUs.

use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::{MapCore, MapHandle};

use crate::bpf::types::count_value;
use crate::count::{decode_row, CountField, CountRow};
use crate::Error;

/// The kernel's count table and the fields its keys were built from (none
/// when the tracer is not counting).
pub(crate) struct CountTable {
    map: MapHandle,
    fields: Vec<CountField>,
}

impl CountTable {
    pub fn new(map: MapHandle, fields: Vec<CountField>) -> CountTable {
        CountTable { map, fields }
    }

    /// The rows counted since the last call, unsorted; see
    /// [`Tracer::take_counts`](crate::Tracer::take_counts).
    pub fn take_rows(&self) -> Result<Vec<CountRow>, Error> {
        if self.fields.is_empty() {
            return Ok(Vec::new());
        }
        let cpus =
            libbpf_rs::num_possible_cpus().map_err(Error::bpf("counting the possible CPUs"))?;
        let keys: Vec<Vec<u8>> = self.map.keys().collect();
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = self.take_row(&key, cpus)? {
                rows.extend(decode_row(&self.fields, &key, &value));
            }
        }
        Ok(rows)
    }

    /// Reads and removes one row of the per-CPU table, summed over the CPUs.
    fn take_row(&self, key: &[u8], cpus: usize) -> Result<Option<count_value>, Error> {
        // The kernel writes one 8-byte-aligned value per possible CPU.
        let size = size_of::<count_value>().next_multiple_of(8);
        let mut values = vec![0u8; cpus * size];
        // SAFETY: `key` has the map's key size (it came from the map) and
        // `values` holds a value for every possible CPU, as the call writes.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_map_lookup_and_delete_elem(
                self.map.as_fd().as_raw_fd(),
                key.as_ptr().cast(),
                values.as_mut_ptr().cast(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None); // gone since the keys were listed
            }
            return Err(Error::System(format!("reading the count table: {err}")));
        }
        let mut sum = count_value::default();
        for cpu in values.chunks_exact(size) {
            sum.events += u64_at(cpu, offset_of!(count_value, events));
            sum.bytes += u64_at(cpu, offset_of!(count_value, bytes));
        }
        Ok(Some(sum))
    }
}

/// The `__u64` at `offset` in one CPU's value.
fn u64_at(value: &[u8], offset: usize) -> u64 {
    let bytes = &value[offset..offset + size_of::<u64>()];
    u64::from_ne_bytes(bytes.try_into().expect("8-byte slice"))
}
