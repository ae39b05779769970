//! Reading `udptrace count`'s per-CPU tables from user space: the slots of
//! compact keys, which only grow (each read takes what was added since the
//! last), and the hash table of the other keys, whose rows are read and
//! removed in one step (before Linux 5.14, which cannot, they stay and each
//! read takes what was added since the last, as for slots). Rows are summed
//! over the CPUs and both tables.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::bpf::types::{count_slot, count_slot_state, count_value};
use crate::count::{
    decode_row, row_of, widen, CountField, CountRow, CountValue, COUNT_SLOTS_PER_CPU,
};
use crate::Error;

/// The kernel's count tables and the fields their keys were built from (none
/// when the tracer is not counting).
pub(crate) struct CountTable {
    map: MapHandle,
    slots: MapHandle,
    fields: Vec<CountField>,
    /// What each slot of each CPU held at the last read, by slot then CPU.
    slots_read: Mutex<Vec<count_value>>,
    /// Where the kernel cannot read and remove a row in one step: what each
    /// row held at the last read.
    rows_read: Mutex<Option<HashMap<Vec<u8>, count_value>>>,
}

// SAFETY: a plain C struct of integers and byte arrays: any bytes are a valid value.
unsafe impl plain::Plain for count_slot {}

impl CountTable {
    pub fn new(map: MapHandle, slots: MapHandle, fields: Vec<CountField>) -> CountTable {
        CountTable {
            map,
            slots,
            fields,
            slots_read: Mutex::new(Vec::new()),
            rows_read: Mutex::new(None),
        }
    }

    /// The rows counted since the last call, unsorted, one per key; see
    /// [`Tracer::take_counts`](crate::Tracer::take_counts).
    pub fn take_rows(&self) -> Result<Vec<CountRow>, Error> {
        if self.fields.is_empty() {
            return Ok(Vec::new());
        }
        let cpus =
            libbpf_rs::num_possible_cpus().map_err(Error::bpf("counting the possible CPUs"))?;
        let mut rows = Vec::new();
        // A failed read leaves what it did not take in the kernel for the
        // next call: the rows taken before it are returned, not dropped.
        let failure = self.take_slot_rows(cpus, &mut rows).err().or_else(|| {
            let keys: Vec<Vec<u8>> = self.map.keys().collect();
            for key in keys {
                match self.take_row(&key, cpus) {
                    Ok(Some(value)) => rows.extend(decode_row(&self.fields, &key, &value)),
                    Ok(None) => {}
                    Err(e) => return Some(e),
                }
            }
            None
        });
        match failure {
            Some(e) if rows.is_empty() => Err(e),
            _ => Ok(merge_rows(rows)),
        }
    }

    /// Adds to `rows` what the slots counted since the last read: a slot's
    /// key never changes once ready, and its value only grows.
    fn take_slot_rows(&self, cpus: usize, rows: &mut Vec<CountRow>) -> Result<(), Error> {
        let mut read = self.slots_read.lock().unwrap_or_else(|e| e.into_inner());
        let slots = COUNT_SLOTS_PER_CPU;
        read.resize(slots * cpus, count_value::default());
        for slot in 0..slots {
            let values = self
                .slots
                .lookup_percpu(&(slot as u32).to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| Error::System(format!("reading the count slots: {e}")))?
                .unwrap_or_default();
            for (cpu, value) in values.iter().enumerate().take(cpus) {
                // Copied: a CPU's value in the buffer is not aligned for the struct.
                let mut s = count_slot::default();
                if plain::copy_from_bytes(&mut s, value).is_err() {
                    continue;
                }
                if s.state != count_slot_state::COUNT_SLOT_READY.0 as u64 {
                    continue;
                }
                let last = &mut read[slot * cpus + cpu];
                let added = count_value {
                    events: s.value.events.saturating_sub(last.events),
                    bytes: s.value.bytes.saturating_sub(last.bytes),
                };
                *last = s.value;
                if added.events > 0 {
                    rows.extend(row_of(&self.fields, &widen(&s.key), &added));
                }
            }
        }
        Ok(())
    }

    /// Reads and removes one row of the per-CPU table, summed over the CPUs;
    /// where the kernel cannot remove it as it reads, what the row gained
    /// since the last read.
    fn take_row(&self, key: &[u8], cpus: usize) -> Result<Option<count_value>, Error> {
        // The kernel writes one 8-byte-aligned value per possible CPU.
        let size = size_of::<count_value>().next_multiple_of(8);
        let mut values = vec![0u8; cpus * size];
        let mut rows_read = self.rows_read.lock().unwrap_or_else(|e| e.into_inner());
        let lookup = match rows_read.as_ref() {
            None => libbpf_rs::libbpf_sys::bpf_map_lookup_and_delete_elem,
            Some(_) => libbpf_rs::libbpf_sys::bpf_map_lookup_elem,
        };
        // SAFETY: `key` has the map's key size (it came from the map) and
        // `values` holds a value for every possible CPU, as the call writes.
        let mut rc = unsafe {
            lookup(
                self.map.as_fd().as_raw_fd(),
                key.as_ptr().cast(),
                values.as_mut_ptr().cast(),
            )
        };
        // ENOTSUPP: hash tables are read and removed in one step from Linux 5.14.
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(524) {
            *rows_read = Some(HashMap::new());
            // SAFETY: as above.
            rc = unsafe {
                libbpf_rs::libbpf_sys::bpf_map_lookup_elem(
                    self.map.as_fd().as_raw_fd(),
                    key.as_ptr().cast(),
                    values.as_mut_ptr().cast(),
                )
            };
        }
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None); // gone since the keys were listed
            }
            return Err(Error::System(format!("reading the count table: {err}")));
        }
        let mut sum = Self::sum(&values, size);
        if let Some(last) = rows_read.as_mut() {
            let before = last.insert(key.to_vec(), sum).unwrap_or_default();
            sum = count_value {
                events: sum.events.saturating_sub(before.events),
                bytes: sum.bytes.saturating_sub(before.bytes),
            };
            if sum.events == 0 {
                return Ok(None);
            }
        }
        Ok(Some(sum))
    }

    /// A row's values, one per CPU, added up.
    fn sum(values: &[u8], size: usize) -> count_value {
        let mut sum = count_value::default();
        for cpu in values.chunks_exact(size) {
            sum.events += u64_at(cpu, offset_of!(count_value, events));
            sum.bytes += u64_at(cpu, offset_of!(count_value, bytes));
        }
        sum
    }
}

/// One row per key: a key counts on every CPU, and in both tables when
/// another key held its slot on some CPU.
fn merge_rows(rows: Vec<CountRow>) -> Vec<CountRow> {
    let mut by_key: HashMap<Vec<CountValue>, CountRow> = HashMap::with_capacity(rows.len());
    for row in rows {
        match by_key.get_mut(&row.key) {
            Some(r) => {
                r.events += row.events;
                r.bytes += row.bytes;
            }
            None => {
                by_key.insert(row.key.clone(), row);
            }
        }
    }
    by_key.into_values().collect()
}

/// The `__u64` at `offset` in one CPU's value.
fn u64_at(value: &[u8], offset: usize) -> u64 {
    let bytes = &value[offset..offset + size_of::<u64>()];
    u64::from_ne_bytes(bytes.try_into().expect("8-byte slice"))
}
