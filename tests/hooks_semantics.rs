//! Tasmota's semantics traps, one by one, each against what ../shared/spec/tasmota-script-to-rhai.md
//! (sections 2 and 5) says Tasmota does, run through the real translation and the real Rhai engine;
//! then the sandbox: an endless loop, a division by zero, a huge string and a runaway recursion each stop
//! their hook with a clear error at the script's line, and the other hooks go on.

use std::time::Duration;

use chrono::NaiveDate;
use sml::hooks::{HookContext, HookError, Hooks, HostCommand, Limits, Readings};
use sml::script::{Diagnostic, Severity};

/// Compile a script's sections and build its hooks.
fn hooks(text: &str) -> Hooks {
    hooks_with(text, Limits::default())
}

/// The front end refuses a script without a meter (`sml run` could not run it): sections-only
/// test scripts get one meter after their own lines, so their line numbers stay as written.
fn with_meter(text: &str) -> String {
    if text.contains(">M") {
        return text.to_string();
    }
    let sep = if text.ends_with('\n') { "" } else { "\n" };
    format!("{text}{sep}>M 1\n+1,3,o,0,9600,X\n1,1.8.0(@1,E,kWh,e,3\n#\n")
}

fn hooks_with(text: &str, limits: Limits) -> Hooks {
    let compiled = sml::script::compile(with_meter(text).as_bytes());
    let script = compiled
        .script
        .unwrap_or_else(|| panic!("front end: {:#?}", compiled.diagnostics));
    Hooks::with_limits(&script, limits).unwrap_or_else(|e| panic!("translation: {e:#?}"))
}

fn check(text: &str) -> Vec<Diagnostic> {
    let script = sml::script::compile(with_meter(text).as_bytes())
        .script
        .expect("compiles");
    sml::hooks::check::check(&script)
}

fn ctx(uptime_s: u64, readings: &dyn Readings) -> HookContext<'_> {
    HookContext {
        uptime: Duration::from_secs(uptime_s),
        local: NaiveDate::from_ymd_opt(2026, 11, 27)
            .unwrap()
            .and_hms_opt(13, 5, 7)
            .unwrap(),
        epoch: 1_795_784_707,
        readings,
    }
}

fn boot(h: &mut Hooks) -> Vec<HookError> {
    h.run_boot(&ctx(0, &Vec::new()))
}

#[test]
fn arithmetic_runs_strictly_left_to_right() {
    // Spec 2.3 / trap 1: no precedence, `2+3*4` is (2+3)*4 = 20; brackets group.
    let mut h = hooks(">D\nx=0\ny=0\n>B\nx=2+3*4\ny=2+(3*4)\n");
    assert!(boot(&mut h).is_empty());
    assert_eq!(h.number("x"), Some(20.0));
    assert_eq!(h.number("y"), Some(14.0));
}

#[test]
fn large_counters_round_to_single_precision() {
    // Trap 3: numbers are 32-bit floats; above 16,777,216 adding 1 is lost, and a meter total is read
    // through a float too.
    let mut h = hooks(">D\nx=16777216\ny=0\n>S\nx+=1\ny=sml[1]\n");
    assert!(h.run_every_second(&ctx(1, &vec![16_777_217.0])).is_none());
    assert_eq!(h.number("x"), Some(16_777_216.0));
    assert_eq!(h.number("y"), Some(16_777_216.0));
    // 0.1 is held as the nearest float, as on the ESP.
    let mut h = hooks(">D\nx=0\n>B\nx=0.1\n");
    boot(&mut h);
    assert_eq!(h.number("x"), Some(0.1f32 as f64));
}

#[test]
fn a_string_compared_with_a_number_is_false_and_check_says_so() {
    // Spec 2.3 / trap 5: only ==/!= compare strings; a string against a number is never true.
    let text = ">D\ns=\"10\"\na=0\nb=0\n>B\nif s==9 {\na=1\n}\nif s==\"10\" {\nb=1\n}\n";
    let mut h = hooks(text);
    boot(&mut h);
    assert_eq!(h.number("a"), Some(0.0));
    assert_eq!(h.number("b"), Some(1.0));
    let d = check(text);
    assert!(
        d.iter()
            .any(|d| d.line == 6 && d.message.contains("string with a number")),
        "{d:#?}"
    );
}

#[test]
fn an_undeclared_variable_leaves_the_target_unchanged_and_prints_three_question_marks() {
    // Trap 6: variables exist only when declared; an assignment from an unknown name is skipped and
    // `%name%` inserts `???`.
    let text = ">D\nx=5\n>B\nx=nothere\nprint x=%x% y=%nothere%\n";
    let mut h = hooks(text);
    boot(&mut h);
    assert_eq!(h.number("x"), Some(5.0));
    assert_eq!(
        h.take_commands(),
        vec![HostCommand::Log("x=5.00 y=???".into())]
    );
    let d = check(text);
    assert!(
        d.iter().any(|d| d.line == 4
            && d.severity == Severity::Warning
            && d.message.contains("`nothere`")),
        "{d:#?}"
    );
}

#[test]
fn a_string_over_its_capacity_is_cut_silently() {
    // Spec 2.1: capacity 19 by default, `>D n` sets it; every string result is cut to it.
    let mut h = hooks(">D\ns=\"\"\n>B\ns=\"0123456789abcdefghijKLMN\"\n");
    boot(&mut h);
    assert_eq!(h.text("s").as_deref(), Some("0123456789abcdefghi"));
    let mut h = hooks(">D 30\ns=\"abc\"\n>B\ns+=\"0123456789012345678901234567890123\"\n");
    boot(&mut h);
    assert_eq!(h.text("s").unwrap().chars().count(), 30);
}

#[test]
fn percent_var_in_a_command_is_substituted_with_its_decimals() {
    // Spec 2.4: `%name%` with the default 2 decimals, `%0name%` with none; `dpN` changes the default.
    let mut h =
        hooks(">D\nv=3.14159\nn=7\n>B\n=>publish stat/x/v %v% %0n%\ndp1\n->publish a %v%\n");
    boot(&mut h);
    assert_eq!(
        h.take_commands(),
        vec![
            HostCommand::Log("SCR: performs \"publish stat/x/v 3.14 7\"".into()),
            HostCommand::Publish {
                topic: "stat/x/v".into(),
                payload: "3.14 7".into()
            },
            HostCommand::Publish {
                topic: "a".into(),
                payload: "3.1".into()
            },
        ]
    );
}

#[test]
fn conditions_combine_in_order_without_precedence() {
    // Trap 10: `if a and b or c` is `(a and b) or c`, every condition evaluated.
    let text = ">D\na=0\nr=0\n>B\nif a==1\nand a==2\nor a==0\nthen\nr=1\nendif\n";
    let mut h = hooks(text);
    boot(&mut h);
    assert_eq!(h.number("r"), Some(1.0));
}

#[test]
fn switch_runs_every_equal_case_and_for_runs_at_least_once() {
    // Traps 11 and 12.
    let text = ">D\nsw=2\nn=0\ni=0\nk=0\n>B\nswitch sw\ncase 2\nn+=1\ncase 2\nn+=10\ncase 3\nn+=100\nends\nfor i 5 1 1\nk+=1\nnext\n";
    let mut h = hooks(text);
    boot(&mut h);
    assert_eq!(h.number("n"), Some(11.0));
    assert_eq!(h.number("k"), Some(1.0));
    assert_eq!(h.number("i"), Some(6.0));
}

#[test]
fn int_floors_and_modulo_keeps_the_dividends_sign() {
    // Trap 4.
    let mut h = hooks(">D\na=0\nb=0\n>B\na=int(-1.5)\nb=-7%3\n");
    boot(&mut h);
    assert_eq!(h.number("a"), Some(-2.0));
    assert_eq!(h.number("b"), Some(-1.0));
}

#[test]
fn the_json_gate_of_the_sanxing_seed_opens_after_22_seconds() {
    // Spec 4.3: smlj=0 at boot, `if upsecs>22 then smlj=1` in >S.
    let mut h = hooks(">D\n>B\nsmlj=0\n->sensor53 r\n>S\nif upsecs>22\nthen\nsmlj=1\nendif\n");
    assert!(boot(&mut h).is_empty());
    assert_eq!(h.take_commands(), vec![HostCommand::RestartMeters]);
    assert_eq!(h.smlj(), 0);
    h.run_every_second(&ctx(22, &Vec::new()));
    assert_eq!(h.smlj(), 0);
    h.run_every_second(&ctx(23, &Vec::new()));
    assert_eq!(h.smlj(), 1);
}

#[test]
fn an_iec_handshake_in_f_queues_baud_changes_and_sends_in_order() {
    // Spec 4.8: a counter, a switch and sml() calls every 100 ms.
    let text = ">D\nscnt=0\nres=0\n>F\nscnt+=1\nswitch scnt\ncase 1\nres=sml(1 0 300)\nres=sml(1 1 \"2F3F210D0A\")\ncase 2\nsml(-1 1 \"2400:8E1\")\ndelay(350)\nends\n";
    let mut h = hooks(text);
    h.run_every_100ms(&ctx(0, &Vec::new()));
    assert_eq!(
        h.take_commands(),
        vec![
            HostCommand::SetBaud {
                meter: 1,
                baud: 300
            },
            HostCommand::Send {
                meter: 1,
                bytes: b"/?!\r\n".to_vec()
            },
        ]
    );
    h.run_every_100ms(&ctx(0, &Vec::new()));
    assert_eq!(
        h.take_commands(),
        vec![
            HostCommand::SetMode {
                meter: 1,
                baud: 2400,
                parity: sml::script::model::Parity::Even
            },
            HostCommand::Delay(Duration::from_millis(350)),
        ]
    );
    assert_eq!(h.number("res"), Some(1.0));
}

#[test]
fn timers_count_down_by_the_real_elapsed_seconds_and_stop_at_zero() {
    let mut h = hooks(">D\nt:t1=3\nn=0\n>S\nif t1==0 {\nn+=1\nt1=3\n}\n");
    for s in 1..=7 {
        h.run_every_second(&ctx(s, &Vec::new()));
    }
    // Zero at seconds 3 and 6.
    assert_eq!(h.number("n"), Some(2.0));
}

#[test]
fn a_json_path_in_t_reads_the_sensor_json_and_keeps_the_old_value_when_absent() {
    let mut h = hooks(">D\nw=5\n>T\nw=WAERME#w_total\n");
    let json = serde_json::json!({"WAERME": {"w_total": 1234.5}});
    assert!(h.run_teleperiod(&ctx(10, &Vec::new()), &json).is_none());
    assert_eq!(h.number("w"), Some(1234.5));
    h.run_teleperiod(&ctx(11, &Vec::new()), &serde_json::json!({"OTHER": 1}));
    assert_eq!(h.number("w"), Some(1234.5));
}

#[test]
fn j_lines_are_appended_with_their_substitutions() {
    let mut h = hooks(">D\nw_delta=1.5\n>J\n,\"w_delta\":%3w_delta%\n");
    assert_eq!(
        h.json_append(&ctx(0, &Vec::new())),
        (",\"w_delta\":1.500".to_string(), None)
    );
}

#[test]
fn subroutines_share_the_global_variables_and_return_values() {
    let text = ">D\np=0\nr=0\n>B\nr=#twice(21)\n#twice(p)\nreturn p*2\n";
    let mut h = hooks(text);
    assert!(boot(&mut h).is_empty());
    assert_eq!(h.number("r"), Some(42.0));
    assert_eq!(h.number("p"), Some(21.0));
}

#[test]
fn chg_reports_a_change_once() {
    let mut h = hooks(">D\nv=0\nn=0\n>S\nif chg[v]>0 {\nn+=1\n}\n");
    h.run_every_second(&ctx(1, &Vec::new()));
    assert_eq!(
        h.number("n"),
        Some(0.0),
        "the shadow starts at the declared value"
    );
    let mut h = hooks(">D\nv=0\nn=0\n>S\nv=upsecs\nif chg[v]>0 {\nn+=1\n}\n");
    h.run_every_second(&ctx(1, &Vec::new()));
    h.run_every_second(&ctx(1, &Vec::new()));
    assert_eq!(h.number("n"), Some(1.0));
}

#[test]
fn unknown_syntax_is_an_error_at_line_and_column_with_a_caret() {
    // The column is where the user's own line stops making sense, indentation included.
    let text = ">D\nx=0\n>S\nx=1\n  x=(1+\n";
    let script = sml::script::compile(with_meter(text).as_bytes())
        .script
        .expect("compiles");
    let d = sml::hooks::check::check_with_source(&script, text);
    let e: Vec<_> = d.iter().filter(|d| d.severity == Severity::Error).collect();
    assert_eq!(e.len(), 1, "{d:#?}");
    assert_eq!((e[0].line, e[0].col), (5, 8));
    assert_eq!(
        e[0].render("s.tas"),
        "s.tas:5:8: error: `x=(1+`: the translation to Rhai does not know this statement\n  x=(1+\n       ^\n"
    );
}

#[test]
fn esp_only_commands_warn_once_naming_the_first_line() {
    let d = check(">D\n>B\n->sensor53 l255\nspinm(4 1)\nspinm(4 1)\n->sensor53 r\n");
    let w: Vec<_> = d
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert_eq!(w[0].line, 3);
    assert_eq!(w[1].line, 4);
    assert!(d.iter().all(|d| d.severity != Severity::Error));
}

// ---------------------------------------------------------------------------------------------
// Sandbox

#[test]
fn an_endless_loop_in_s_is_stopped_at_its_line_once_and_f_still_runs() {
    let limits = Limits {
        operations: 50_000,
        ..Limits::default()
    };
    let mut h = hooks_with(">D\ni=0\nn=0\n>S\nfor i 1 2 0\nnext\n>F\nn+=1\n", limits);
    let e = h.run_every_second(&ctx(1, &Vec::new())).expect("stopped");
    assert!(e.message.contains("50000 operations"), "{e}");
    assert_eq!((e.line, e.section.as_str()), (5, ">S"));
    // The same error again is counted, not reported again.
    assert!(h.run_every_second(&ctx(2, &Vec::new())).is_none());
    assert_eq!(h.error_count(), 2);
    assert!(h.run_every_100ms(&ctx(2, &Vec::new())).is_none());
    assert_eq!(h.number("n"), Some(1.0));
}

#[test]
fn a_division_by_zero_stops_the_hook_with_the_scripts_line() {
    // Tasmota would store inf and publish `null`; sml stops the hook rather than carry a wrong value on.
    let mut h = hooks(">D\nx=1\nz=0\n>S\nx=5\nx=x/z\nx=7\n");
    let e = h.run_every_second(&ctx(1, &Vec::new())).expect("stopped");
    assert_eq!(e.line, 6);
    assert!(e.message.contains("division by zero"), "{e}");
    assert_eq!(h.number("x"), Some(5.0), "nothing after the error ran");
}

#[test]
fn a_100_mb_string_is_refused_by_the_sandbox() {
    // Tasmota strings are capped at their capacity (at most 254) by the translation itself...
    let mut h = hooks(">D 254\ns=\"x\"\ni=0\n>B\nfor i 1 40 1\ns+=s\nnext\n");
    assert!(boot(&mut h).is_empty());
    assert_eq!(h.text("s").unwrap().len(), 254);
    // ...a hook whose string outgrows the sandbox's limit stops with a clear error at its line...
    let limits = Limits {
        string_size: 100,
        ..Limits::default()
    };
    let mut h = hooks_with(
        ">D 254\ns=\"0123456789012345678901234567890123456789\"\n>B\ns+=s\ns+=s\n",
        limits,
    );
    let e = boot(&mut h);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, 5);
    assert!(
        e[0].message.contains("grew past the limit (100 bytes"),
        "{}",
        e[0]
    );
    // ...and any Rhai that grows a string towards 100 MB stops at the sandbox's limit.
    let engine = sml::hooks::host::sandboxed_engine(Limits::default());
    let err = engine
        .run("let s = \"x\"; while s.len() < 100_000_000 { s += s; }")
        .expect_err("stopped");
    assert!(
        matches!(*err, rhai::EvalAltResult::ErrorDataTooLarge(..)),
        "{err}"
    );
}

#[test]
fn a_recursion_without_end_is_stopped_in_its_subroutine() {
    let mut h = hooks(">D\nn=0\n>B\n=#deeper\n#deeper\nn+=1\n=#deeper\n");
    let e = boot(&mut h);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("nested deeper"), "{}", e[0]);
    assert_eq!(e[0].section, "#deeper");
    assert_eq!(e[0].line, 7);
}

#[test]
fn the_sandbox_has_no_file_module_or_eval_access() {
    let engine = sml::hooks::host::sandboxed_engine(Limits::default());
    assert!(engine.run("import \"/etc/passwd\" as p;").is_err());
    assert!(engine.run("eval(\"1\")").is_err());
    assert!(engine.run("let f = open_file(\"/etc/passwd\");").is_err());
}

#[test]
fn numbers_and_strings_convert_as_tasmota_converts_them() {
    // Trap 5: a number into a string has 6 decimals; a string into a number is its leading decimal.
    let mut h = hooks(">D\ns=\"\"\nx=0\n>B\ns=5\nx=\"12.5kWh\"\n");
    boot(&mut h);
    assert_eq!(h.text("s").as_deref(), Some("5.000000"));
    assert_eq!(h.number("x"), Some(12.5));
}

#[test]
fn tper_is_clamped_to_10_to_300_seconds() {
    // Trap 13: the script setter clamps; the console command allows up to 3600.
    let mut h = hooks(">D\n>B\ntper=5\n->teleperiod 600\n");
    boot(&mut h);
    assert_eq!(
        h.take_commands(),
        vec![
            HostCommand::SetTeleperiod { seconds: 10 },
            HostCommand::SetTeleperiod { seconds: 600 },
        ]
    );
}

#[test]
fn arrays_follow_tasmotas_index_rules() {
    // Spec 2.1: `arr=x` feeds the ring, `arr[i]` 1-based, `[-1]` length, `[-3]` sum, out of range reads
    // element 1 and writes nothing.
    let text = ">D\nM:a=0 3\nn=0\nsum=0\nfar=0\n>B\na=5\na=7\na[3]=1\na[9]=100\nn=a[-1]\nsum=a[-3]\nfar=a[9]\n";
    let mut h = hooks(text);
    assert!(boot(&mut h).is_empty());
    assert_eq!(h.array("a").unwrap().values, vec![5.0, 7.0, 1.0]);
    assert_eq!(h.number("n"), Some(3.0));
    assert_eq!(h.number("sum"), Some(13.0));
    assert_eq!(h.number("far"), Some(5.0));
}

#[test]
fn permanent_variables_are_saved_and_restored() {
    let text =
        ">D\np:total=0\np:name=\"x\"\nother=0\n>B\ntotal=12.5\nname=\"meter\"\nother=1\nsvars\n";
    let mut h = hooks(text);
    boot(&mut h);
    assert_eq!(h.take_commands(), vec![HostCommand::SavePermanent]);
    let saved = h.permanent_values();
    assert_eq!(
        serde_json::Value::Object(saved.clone()),
        serde_json::json!({"total": 12.5, "name": "meter"})
    );
    let mut fresh = hooks(text);
    fresh.restore_permanent(&saved);
    assert_eq!(fresh.number("total"), Some(12.5));
    assert_eq!(fresh.text("name").as_deref(), Some("meter"));
}

#[test]
fn a_subroutine_can_return_a_string_and_the_first_of_two_equal_names_runs() {
    let text = ">D\ns=\"\"\n>B\ns=#name\n#name\nreturn \"first\"\n#name\nreturn \"second\"\n";
    let mut h = hooks(text);
    assert!(boot(&mut h).is_empty());
    assert_eq!(h.text("s").as_deref(), Some("first"));
    assert!(check(text)
        .iter()
        .any(|d| d.line == 7 && d.message.contains("second subroutine")));
}

mod left_to_right {
    use super::*;
    use proptest::prelude::*;

    /// What Tasmota computes: each step in single precision, strictly in source order.
    fn tasmota(first: f32, rest: &[(char, f32)]) -> f32 {
        rest.iter().fold(first, |acc, &(op, v)| match op {
            '+' => acc + v,
            '-' => acc - v,
            _ => acc * v,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn any_chain_of_plus_minus_times_matches_a_single_precision_fold(
            first in 0u32..100_000,
            rest in proptest::collection::vec((prop_oneof![Just('+'), Just('-'), Just('*')], 0u32..1000, 0u32..100), 1..6),
        ) {
            // Operands like `12.34`: decimals are not exact in binary, so rounding shows.
            let rest: Vec<(char, f32)> = rest
                .iter()
                .map(|&(op, int, frac)| (op, format!("{int}.{frac:02}").parse::<f32>().unwrap()))
                .collect();
            let expr: String = std::iter::once(format!("{first}"))
                .chain(rest.iter().map(|(op, v)| format!("{op}{v}")))
                .collect();
            let mut h = hooks(&format!(">D\nx=0\n>B\nx={expr}\n"));
            prop_assert!(boot(&mut h).is_empty());
            prop_assert_eq!(h.number("x"), Some(tasmota(first as f32, &rest) as f64), "x={}", expr);
        }
    }
}

#[test]
fn an_undeclared_name_in_a_condition_reads_zero() {
    // Trap 6: unknown names read as 0 in a condition (and the check warns).
    let text = ">D\nx=0\ny=0\n>B\nif nothere==0 {\nx=1\n} else {\ny=1\n}\n";
    let mut h = hooks(text);
    assert!(boot(&mut h).is_empty());
    assert_eq!((h.number("x"), h.number("y")), (Some(1.0), Some(0.0)));
    assert!(check(text)
        .iter()
        .any(|d| d.line == 5 && d.message.contains("reads 0")));
}
