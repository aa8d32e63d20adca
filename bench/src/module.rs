//! The "big module" of figure 2: a WASI preview 1 command module with many small functions.
//!
//! Issue 4 measures the second start of a ~2.5 MB module with ~60,000 functions (the size
//! of a real application compiled to Wasm), where compiling takes seconds and the compile
//! cache has to make the start as cheap as a hello module's. [`big_module`] writes the WAT
//! text and assembles it with the `wat` crate: function `i` mixes its argument with a few
//! constants (about 40 bytes of code each, so Cranelift has real work per function) and
//! calls function `i + 1` when its argument is zero; `_start` calls the first one with 1
//! and returns, so a run executes almost nothing and exits 0. No imports: the module links
//! against any WASI preview 1 host.

use std::fmt::Write as _;

/// Builds the module; `functions` small functions plus `_start`.
pub fn big_module(functions: u32) -> anyhow::Result<Vec<u8>> {
    let mut wat = String::with_capacity(functions as usize * 220);
    wat.push_str("(module\n  (type $t (func (param i32) (result i32)))\n");
    for i in 0..functions {
        let next = if i + 1 < functions {
            format!(
                "(if (i32.eqz (local.get 0)) (then (drop (call $f{} (i32.const 1)))))",
                i + 1
            )
        } else {
            String::new()
        };
        // Constants differ per function so no two bodies are identical.
        let a = i.wrapping_mul(2_654_435_761) & 0xf_ffff;
        let b = i.wrapping_mul(40_503) & 0xffff | 1;
        writeln!(
            wat,
            "  (func $f{i} (type $t) {next} \
             (i32.xor (i32.mul (i32.add (local.get 0) (i32.const {a})) (i32.const {b})) \
             (i32.shr_u (local.get 0) (i32.const {r}))))",
            r = i % 31 + 1,
        )?;
    }
    wat.push_str("  (func (export \"_start\") (drop (call $f0 (i32.const 1))))\n)\n");
    Ok(wat::parse_str(&wat)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_module_with_start_and_about_42_bytes_per_function() {
        let wasm = big_module(1000).unwrap();
        assert!(wasm.starts_with(b"\0asm\x01\0\0\0"));
        let per_function = wasm.len() / 1000;
        assert!(
            (30..=60).contains(&per_function),
            "{per_function} bytes/function"
        );
    }
}
