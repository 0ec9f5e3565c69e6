// Test helper: an `o` meter from Tasmota metric descriptors (`1-0:1.8.0(@1`, `0-0:98.1.0(@(1:1`,
// `0.2.0(@#)`, `@s 0:1`): it writes the script a user would (one metric line per descriptor, names
// `e<entry>`, 3 decimals) and compiles it with the real front end.
// Included with `include!` into a module that has `compile` and `script::model::*` in scope (the
// crate's own unit tests name them `crate::`, integration tests `sml::`).

/// The script text for these descriptors.
#[allow(dead_code)]
pub fn obis_script(descriptors: &[&str]) -> String {
    let mut text = String::from(">D\n>M 1\n+1,3,o,0,115200,M\n");
    for (i, d) in descriptors.iter().enumerate() {
        let e = i + 1;
        text.push_str(&format!("1,{d},e{e},,e{e},3\n"));
    }
    text.push_str("#\n");
    text
}

/// Meter 1 of [`obis_script`], compiled; panics with the diagnostics if it does not compile.
#[allow(dead_code)]
pub fn obis_meter(descriptors: &[&str]) -> Meter {
    let text = obis_script(descriptors);
    let compiled = compile(text.as_bytes());
    let Some(mut script) = compiled.script else {
        panic!("generated script does not compile: {:?}\n{text}", compiled.diagnostics);
    };
    script.meters.remove(0)
}
