//! Compiles the BPF programs with clang and generates their libbpf-rs skeleton.
//!
//! The programs are compiled twice: as they are, and without the atomic
//! instructions that kernels before 5.12 refuse (compare-and-exchange,
//! exchange), which their verifier rejects wherever they appear, reachable or
//! not. Both objects must have the same maps, programs and globals, so one
//! skeleton serves both; the loader picks the object the kernel accepts.

include!("build_tools.rs");

const BPF_DIR: &str = "../bpf";
const SOURCE: &str = "../bpf/udptrace.bpf.c";

fn main() {
    let out =
        std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let with_atomics = out.join("udptrace.bpf.o");
    // Same file name, so that both skeletons name the object alike.
    let twin_dir = out.join("no_atomics");
    std::fs::create_dir_all(&twin_dir).expect("creating OUT_DIR/no_atomics");
    let without_atomics = twin_dir.join("udptrace.bpf.o");
    let skeleton = out.join("udptrace.skel.rs");
    let twin = twin_dir.join("udptrace.skel.rs");
    build_bpf_object(SOURCE, BPF_DIR, &with_atomics, &[], "the BPF programs");
    build_bpf_object(
        SOURCE,
        BPF_DIR,
        &without_atomics,
        &["-DUDPTRACE_NO_ATOMICS"],
        "the BPF programs without atomics",
    );
    generate_skeleton(&with_atomics, &skeleton, "the BPF programs");
    generate_skeleton(&without_atomics, &twin, "the BPF programs without atomics");
    let text = std::fs::read_to_string(&skeleton).expect("the skeleton was just written");
    let twin_text = std::fs::read_to_string(&twin).expect("the skeleton was just written");
    if without_data(&text) != without_data(&twin_text) {
        eprintln!(
            "error: the BPF programs built with and without atomics differ in more than \
             their code (maps, programs or globals): compare {} and {}",
            skeleton.display(),
            twin.display()
        );
        std::process::exit(1);
    }
    // The skeleton opens the object the running kernel accepts.
    let opener = "ObjectSkeletonConfigBuilder::new(&DATA)";
    assert!(
        text.contains(opener),
        "the skeleton opens its object with {opener}"
    );
    let mut patched = text.replace(
        opener,
        "ObjectSkeletonConfigBuilder::new(crate::features::bpf_object(&DATA, &DATA_NO_ATOMICS))",
    );
    let end = patched
        .trim_end()
        .rfind('}')
        .expect("the skeleton ends its module");
    let twin_data = &twin_text[data_statement(&twin_text)];
    patched.insert_str(
        end,
        &format!(
            "{}\n",
            twin_data.replace("static DATA:", "static DATA_NO_ATOMICS:")
        ),
    );
    std::fs::write(&skeleton, patched).expect("writing the skeleton");
    // The programs' source and every header it includes: cargo rescans the
    // whole directory, so a header added later is covered too.
    println!("cargo:rerun-if-changed={BPF_DIR}");
}

/// Where a skeleton's statement that embeds its object is.
fn data_statement(skeleton: &str) -> std::ops::Range<usize> {
    let start = skeleton
        .find("static DATA:")
        .expect("the skeleton embeds its object");
    // After the array type's own `;`: the statement ends with the macro's `);`.
    let end = start + skeleton[start..].find(");").expect("the statement ends") + 2;
    start..end
}

/// A skeleton without the statement that embeds its object, its items in a
/// fixed order: the compiler writes types in the order the code first uses
/// them, which the two builds' code need not share.
fn without_data(skeleton: &str) -> Vec<String> {
    let at = data_statement(skeleton);
    let text = format!("{}{}", &skeleton[..at.start], &skeleton[at.end..]);
    let mut items: Vec<String> = text
        .split("\n        #[derive(")
        .map(str::to_owned)
        .collect();
    items.sort();
    items
}
