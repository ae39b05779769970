//! Reading `udptrace latency`'s per-CPU histograms from user space: each row
//! is read and removed in one step and summed over the CPUs. Before Linux
//! 5.14, which cannot remove as it reads, rows stay and each read takes what
//! they gained since the last (their maximum is then the run's).

use std::collections::HashMap;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;

use libbpf_rs::{MapCore, MapHandle};

use crate::bpf::types::{count_key, hist_value};
use crate::count::{key_of, CountField};
use crate::hist::HistRow;
use crate::Error;

// SAFETY: a plain C struct of integers: any bytes are a valid value.
unsafe impl plain::Plain for hist_value {}

/// The kernel's histograms and the fields their keys were built from (None
/// when the tracer keeps no histogram).
pub(crate) struct HistTable {
    map: MapHandle,
    fields: Option<Vec<CountField>>,
    /// Where rows cannot be removed as they are read: each row at the last read.
    rows_read: Mutex<Option<HashMap<Vec<u8>, hist_value>>>,
}

impl HistTable {
    pub fn new(map: MapHandle, fields: Option<Vec<CountField>>) -> HistTable {
        HistTable {
            map,
            fields,
            rows_read: Mutex::new(None),
        }
    }

    /// The rows added since the last call, one per key, unsorted.
    pub fn take_rows(&self) -> Result<Vec<HistRow>, Error> {
        let Some(fields) = &self.fields else {
            return Ok(Vec::new());
        };
        let cpus =
            libbpf_rs::num_possible_cpus().map_err(Error::bpf("counting the possible CPUs"))?;
        let mut rows: HashMap<Vec<crate::CountValue>, HistRow> = HashMap::new();
        let keys: Vec<Vec<u8>> = self.map.keys().collect();
        for key in keys {
            let Some(value) = self.take_row(&key, cpus)? else {
                continue;
            };
            let Some(k) = plain::from_bytes::<count_key>(&key).ok() else {
                continue;
            };
            let Some(values) = key_of(fields, k) else {
                continue;
            };
            let row = HistRow::from_value(values, &value);
            match rows.get_mut(&row.key) {
                Some(r) => r.merge(&row),
                None => {
                    rows.insert(row.key.clone(), row);
                }
            }
        }
        Ok(rows.into_values().collect())
    }

    /// Reads and removes one row, summed over the CPUs; where the kernel
    /// cannot remove it as it reads, what it gained since the last read.
    fn take_row(&self, key: &[u8], cpus: usize) -> Result<Option<hist_value>, Error> {
        let size = size_of::<hist_value>().next_multiple_of(8);
        let mut values = vec![0u8; cpus * size];
        let mut rows_read = self.rows_read.lock().unwrap_or_else(|e| e.into_inner());
        let fd = self.map.as_fd().as_raw_fd();
        let lookup = |f: unsafe extern "C" fn(_, _, _) -> _, values: &mut Vec<u8>| {
            // SAFETY: `key` has the map's key size (it came from the map) and
            // `values` holds a value for every possible CPU, as the call writes.
            unsafe { f(fd, key.as_ptr().cast(), values.as_mut_ptr().cast()) }
        };
        let mut rc = match rows_read.as_ref() {
            None => lookup(
                libbpf_rs::libbpf_sys::bpf_map_lookup_and_delete_elem,
                &mut values,
            ),
            Some(_) => lookup(libbpf_rs::libbpf_sys::bpf_map_lookup_elem, &mut values),
        };
        // ENOTSUPP: hash tables are read and removed in one step from Linux 5.14.
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(524) {
            *rows_read = Some(HashMap::new());
            rc = lookup(libbpf_rs::libbpf_sys::bpf_map_lookup_elem, &mut values);
        }
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                return Ok(None); // gone since the keys were listed
            }
            return Err(Error::System(format!("reading the histograms: {err}")));
        }
        let mut sum = hist_value::default();
        for cpu in values.chunks_exact(size) {
            let mut v = hist_value::default();
            if plain::copy_from_bytes(&mut v, cpu).is_err() {
                continue;
            }
            add(&mut sum, &v);
        }
        if let Some(last) = rows_read.as_mut() {
            let before = last.insert(key.to_vec(), sum).unwrap_or_default();
            sum = since(&sum, &before);
        }
        Ok((sum.count > 0).then_some(sum))
    }
}

fn add(sum: &mut hist_value, v: &hist_value) {
    sum.count += v.count;
    sum.sum += v.sum;
    sum.max = sum.max.max(v.max);
    for (a, b) in sum.buckets.iter_mut().zip(v.buckets) {
        *a += b;
    }
}

/// What `now` gained over `before`; the maximum stays the run's.
fn since(now: &hist_value, before: &hist_value) -> hist_value {
    let mut d = *now;
    d.count = now.count.saturating_sub(before.count);
    d.sum = now.sum.saturating_sub(before.sum);
    for (a, b) in d.buckets.iter_mut().zip(before.buckets) {
        *a = a.saturating_sub(b);
    }
    d
}
