//! One `daemon_status` answer, as the listener's quick path writes it: `cargo bench --bench
//! status`. At 64 members (what `lsnr-bench --scenario tcp-req` asks for) and at 10,000.

use divan::{Bencher, black_box};
use osvc_agent::internals::bench_support::StatusFixture;

fn main() {
    divan::main();
}

fn answer(bencher: Bencher, members: usize) {
    let fixture = StatusFixture::new(members);
    bencher.bench_local(|| black_box(fixture.answer_len()));
}

#[divan::bench]
fn answer_64_members(bencher: Bencher) {
    answer(bencher, 64);
}

#[divan::bench]
fn answer_10000_members(bencher: Bencher) {
    answer(bencher, 10_000);
}
