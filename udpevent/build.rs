//! Gives the shared library the SONAME consumers load it by.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libudpEvent.so");
}
