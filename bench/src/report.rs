//! The table, the chart and the files.
use std::path::Path;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use plotters::prelude::*;

use crate::{
    results::{Dataplane, Figure, RATIOS, Record, Results},
    stats,
};

/// A value with sensible precision for its size.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if x.fract() == 0.0 || a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn cell_text(r: Option<&Record>) -> String {
    match r {
        None => "-".into(),
        Some(r) => match (r.median, r.min_max(), &r.error) {
            (Some(m), Some((lo, hi)), _) if r.samples.len() > 1 => {
                format!("{} ({}–{})", fmt_num(m), fmt_num(lo), fmt_num(hi))
            }
            (Some(m), _, _) => fmt_num(m),
            (None, _, Some(_)) => "failed".into(),
            (None, _, None) => "-".into(),
        },
    }
}

/// One dataplane's median over another's, as "1.23×".
fn ratio_text(res: &Results, f: Figure, ports: u32, num: Dataplane, den: Dataplane) -> String {
    // A count of rules has no meaningful ratio (pier's is 0 by design).
    if f == Figure::RuleCount {
        return "-".into();
    }
    let a = res.get(num, f, ports).and_then(|r| r.median);
    let b = res.get(den, f, ports).and_then(|r| r.median);
    match stats::ratio(a, b) {
        Some(x) => format!("{x:.2}×"),
        None => "-".into(),
    }
}

/// Rows as strings: figure, n (other published ports, or containers for
/// the container figures), unit, one cell per dataplane of the run, and the
/// ratios whose both sides took part.
pub fn rows(res: &Results) -> (Vec<String>, Vec<Vec<String>>) {
    let present = res.dataplanes();
    let ratios: Vec<(Dataplane, Dataplane)> = RATIOS
        .into_iter()
        .filter(|(a, b)| present.contains(a) && present.contains(b))
        .collect();
    let mut header: Vec<String> = vec!["figure".into(), "n".into(), "unit".into()];
    header.extend(present.iter().map(|d| d.as_str().to_string()));
    header.extend(
        ratios
            .iter()
            .map(|(a, b)| format!("{}/{}", a.as_str(), b.as_str())),
    );
    let mut out = Vec::new();
    for (f, ports) in res.rows() {
        let mut row = vec![
            f.as_str().to_string(),
            ports.to_string(),
            f.unit().to_string(),
        ];
        for &d in &present {
            row.push(cell_text(res.get(d, f, ports)));
        }
        for &(a, b) in &ratios {
            row.push(ratio_text(res, f, ports, a, b));
        }
        out.push(row);
    }
    (header, out)
}

/// Per-program run time rows: program, load, then "ns (runs)" for each
/// dataplane that runs pier's programs.
pub fn prog_rows(res: &Results) -> (Vec<String>, Vec<Vec<String>>) {
    let mut dps: Vec<Dataplane> = res.prog_stats.iter().map(|p| p.dataplane).collect();
    dps.sort();
    dps.dedup();
    let mut keys: Vec<(String, String)> = Vec::new();
    for p in &res.prog_stats {
        let k = (p.program.clone(), p.load.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut header: Vec<String> = vec!["program".into(), "load".into()];
    header.extend(
        dps.iter()
            .map(|d| format!("{} ns/packet (packets)", d.as_str())),
    );
    let rows = keys
        .into_iter()
        .map(|(prog, load)| {
            let mut row = vec![prog.clone(), load.clone()];
            for d in &dps {
                row.push(
                    res.prog_stats
                        .iter()
                        .find(|p| p.dataplane == *d && p.program == prog && p.load == load)
                        .map(|p| format!("{:.0} ({})", p.ns_per_run, p.runs))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            row
        })
        .collect();
    (header, rows)
}

/// The figures whose value at scale is set beside their value at 1 (other
/// published ports, or containers for `crr_containers`).
const SCALE_FIGURES: [Figure; 6] = [
    Figure::Throughput1,
    Figure::Throughput4,
    Figure::RrTps,
    Figure::Crr,
    Figure::UdpPps,
    Figure::CrrContainers,
];

/// Flatness rows: for each dataplane and figure measured both at 1 and at a
/// larger n, the median at 1, the largest n, its median, and at n over at 1.
pub fn scale_rows(res: &Results) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "dataplane",
        "figure",
        "unit",
        "at 1",
        "n",
        "at n",
        "at n / at 1",
    ]
    .map(String::from)
    .to_vec();
    let mut out = Vec::new();
    for d in res.dataplanes() {
        for f in SCALE_FIGURES {
            let Some(one) = res.get(d, f, 1).and_then(|r| r.median) else {
                continue;
            };
            let top = res
                .records
                .iter()
                .filter(|r| r.dataplane == d && r.figure == f && r.ports > 1 && r.median.is_some())
                .max_by_key(|r| r.ports);
            let Some(top) = top else { continue };
            let m = top.median.unwrap_or(f64::NAN);
            out.push(vec![
                d.as_str().to_string(),
                f.as_str().to_string(),
                f.unit().to_string(),
                fmt_num(one),
                top.ports.to_string(),
                fmt_num(m),
                stats::ratio(Some(m), Some(one))
                    .map(|x| format!("{x:.2}×"))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    (header, out)
}

/// The flatness table for the terminal ("" when nothing was measured at scale).
pub fn scale_table(res: &Results) -> String {
    let (h, r) = scale_rows(res);
    if r.is_empty() {
        return String::new();
    }
    text_table(h, r, 3)
}

/// The flatness table as Markdown ("" when nothing was measured at scale).
pub fn scale_markdown(res: &Results) -> String {
    let (h, r) = scale_rows(res);
    if r.is_empty() {
        return String::new();
    }
    md(&h, &r)
}

fn md(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", header.join(" | "));
    s.push_str(&format!(
        "|{}\n",
        header.iter().map(|_| " --- |").collect::<String>()
    ));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    s
}

/// The per-program table as Markdown ("" when none was measured).
pub fn prog_markdown(res: &Results) -> String {
    if res.prog_stats.is_empty() {
        return String::new();
    }
    let (h, r) = prog_rows(res);
    md(&h, &r)
}

pub fn table(res: &Results) -> String {
    let (header, rows) = rows(res);
    text_table(header, rows, 3)
}

/// The per-program table for the terminal ("" when none was measured).
pub fn prog_table(res: &Results) -> String {
    if res.prog_stats.is_empty() {
        return String::new();
    }
    let (header, rows) = prog_rows(res);
    text_table(header, rows, 2)
}

fn text_table(header: Vec<String>, rows: Vec<Vec<String>>, left: usize) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new));
    for r in rows {
        t.add_row(r.into_iter().enumerate().map(|(i, c)| {
            let cell = Cell::new(c);
            if i >= left {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    t.to_string()
}

/// The same table as Markdown (for docs/benchmarks.md).
pub fn markdown(res: &Results) -> String {
    let (header, rows) = rows(res);
    md(&header, &rows)
}

pub const DOCS_BEGIN: &str = "<!-- pier-bench results: begin (written by `pier-bench --docs`) -->";
pub const DOCS_END: &str = "<!-- pier-bench results: end -->";

/// Replace what lies between the two markers of `doc` with `section`.
pub fn replace_section(doc: &str, section: &str) -> anyhow::Result<String> {
    let b = doc
        .find(DOCS_BEGIN)
        .ok_or_else(|| anyhow::anyhow!("the document has no line {DOCS_BEGIN}"))?;
    let e = doc
        .find(DOCS_END)
        .filter(|&e| e > b)
        .ok_or_else(|| anyhow::anyhow!("the document has no line {DOCS_END} after the first"))?;
    Ok(format!(
        "{}{DOCS_BEGIN}\n\n{}\n{}",
        &doc[..b],
        section.trim_end_matches('\n').to_string() + "\n",
        &doc[e..]
    ))
}

/// Failed figures, one line per dataplane and reason:
/// "failed: pier crr@1, crr@100: why".
pub fn failures(res: &Results) -> Vec<String> {
    let mut groups: Vec<(Dataplane, &str, Vec<String>)> = Vec::new();
    for r in &res.records {
        let Some(e) = r.error.as_deref() else {
            continue;
        };
        let what = format!("{}@{}", r.figure.as_str(), r.ports);
        match groups
            .iter_mut()
            .find(|(d, why, _)| *d == r.dataplane && *why == e)
        {
            Some(g) => g.2.push(what),
            None => groups.push((r.dataplane, e, vec![what])),
        }
    }
    groups
        .into_iter()
        .map(|(d, why, what)| format!("failed: {} {}: {why}", d.as_str(), what.join(", ")))
        .collect()
}

fn color(d: Dataplane) -> RGBColor {
    match d {
        Dataplane::Ceiling => RGBColor(0, 0, 0),
        Dataplane::Plain => RGBColor(120, 120, 120),
        Dataplane::Iptables => RGBColor(200, 60, 40),
        Dataplane::Netavark => RGBColor(40, 110, 200),
        Dataplane::DockerProxy => RGBColor(150, 90, 20),
        Dataplane::Docker => RGBColor(130, 50, 170),
        Dataplane::DockerPier => RGBColor(100, 200, 180),
        Dataplane::Pier => RGBColor(30, 150, 70),
        Dataplane::PierMonitor => RGBColor(120, 200, 60),
        Dataplane::Ceiling6 => RGBColor(90, 90, 90),
        Dataplane::Ip6tables => RGBColor(240, 140, 120),
        Dataplane::Pier6 => RGBColor(20, 100, 45),
    }
}

/// New connections/s against other published ports, one line per dataplane.
pub fn chart(res: &Results, path: &Path) -> anyhow::Result<()> {
    let series: Vec<(Dataplane, Vec<(u32, f64)>)> = Dataplane::ALL
        .iter()
        .map(|&d| {
            let mut pts: Vec<(u32, f64)> = res
                .records
                .iter()
                .filter(|r| r.dataplane == d && r.figure == Figure::Crr)
                .filter_map(|r| r.median.map(|m| (r.ports, m)))
                .collect();
            pts.sort_by_key(|p| p.0);
            (d, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let max_ports = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .max()
        .unwrap_or(10000)
        .max(10);
    let max_rate = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "New connections/s through a published port vs other published ports",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1u32..max_ports * 2).log_scale(), 0f64..max_rate * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("other published ports (log scale)")
        .y_desc("connections/s (median)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (d, pts) in &series {
        let c = color(*d);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
            .label(d.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        let mut r = Results::default();
        r.push(Record::new(
            Dataplane::Plain,
            Figure::Crr,
            1,
            vec![11000.0, 11200.0, 10800.0],
        ));
        r.push(Record::new(
            Dataplane::Iptables,
            Figure::Crr,
            1,
            vec![9000.0],
        ));
        r.push(Record::new(
            Dataplane::Pier,
            Figure::Crr,
            1,
            vec![12600.0, 12700.0, 12800.0],
        ));
        r.push(Record::failed(
            Dataplane::Netavark,
            Figure::Crr,
            1,
            "not installed",
        ));
        r
    }

    #[test]
    fn scale_rows_set_the_largest_n_beside_1() {
        let mut r = sample();
        for (n, v) in [(100, 12000.0), (10000, 11400.0)] {
            r.push(Record::new(Dataplane::Pier, Figure::Crr, n, vec![v]));
        }
        r.push(Record::failed(Dataplane::Plain, Figure::Crr, 10000, "x"));
        r.push(Record::new(
            Dataplane::Pier,
            Figure::RrTps,
            1,
            vec![50000.0],
        ));
        let (h, rows) = scale_rows(&r);
        assert_eq!(h.len(), 7);
        // Plain has no median at scale, rr_tps nothing beyond 1: one row.
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0][0], "pier");
        assert_eq!(rows[0][3], "12700");
        assert_eq!(rows[0][4], "10000");
        assert_eq!(rows[0][6], "0.90×");
        assert!(
            scale_markdown(&r).contains("| pier | crr | conn/s | 12700 | 10000 | 11400 | 0.90× |")
        );
        assert_eq!(scale_table(&sample()), "");
    }

    #[test]
    fn table_rows_have_medians_ranges_and_ratios() {
        let (header, rows) = rows(&sample());
        assert_eq!(
            header,
            [
                "figure",
                "n",
                "unit",
                "plain",
                "iptables",
                "netavark",
                "pier",
                "pier/plain",
                "pier/iptables",
                "pier/netavark"
            ]
        );
        assert_eq!(
            rows,
            [[
                "crr",
                "1",
                "conn/s",
                "11000 (10800–11200)",
                "9000",
                "failed",
                "12700 (12600–12800)",
                "1.15×",
                "1.41×",
                "-"
            ]]
        );
        assert_eq!(
            failures(&sample()),
            ["failed: netavark crr@1: not installed"]
        );
        let mut r = sample();
        r.push(Record::failed(
            Dataplane::Netavark,
            Figure::Crr,
            100,
            "not installed",
        ));
        r.push(Record::failed(
            Dataplane::Pier,
            Figure::RssMib,
            1000,
            "no agent",
        ));
        assert_eq!(
            failures(&r),
            [
                "failed: netavark crr@1, crr@100: not installed",
                "failed: pier rss_mib@1000: no agent"
            ]
        );
    }

    #[test]
    fn chart_is_an_svg_with_a_line_per_dataplane() {
        let dir = std::env::temp_dir().join(format!("pier-bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("crr.svg");
        let mut res = sample();
        res.push(Record::new(
            Dataplane::Iptables,
            Figure::Crr,
            10000,
            vec![3000.0],
        ));
        res.push(Record::new(
            Dataplane::Pier,
            Figure::Crr,
            10000,
            vec![12500.0],
        ));
        chart(&res, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"));
        let text = |t: &str| svg.contains(&format!(">\n{t}\n</text>"));
        // A legend entry and a 2-px line in its colour for each dataplane with points.
        for (name, hex, present) in [
            ("plain", "#787878", true),
            ("iptables", "#C83C28", true),
            ("pier", "#1E9646", true),
            ("netavark", "#286EC8", false),
        ] {
            assert_eq!(text(name), present, "legend entry {name}");
            let lines = svg
                .lines()
                .filter(|l| {
                    l.starts_with("<polyline")
                        && l.contains(&format!("stroke=\"{hex}\" stroke-width=\"2\""))
                })
                .count();
            // The data line plus the legend's sample line.
            assert_eq!(lines, if present { 2 } else { 0 }, "lines of {name}");
        }
        assert!(text("other published ports (log scale)"));
    }

    #[test]
    fn docs_section_is_replaced_between_the_markers() {
        let doc = format!("# T\n\nbefore\n{DOCS_BEGIN}\nold table\n{DOCS_END}\nafter\n");
        let new = replace_section(&doc, "new table\n").unwrap();
        assert_eq!(
            new,
            format!("# T\n\nbefore\n{DOCS_BEGIN}\n\nnew table\n\n{DOCS_END}\nafter\n")
        );
        // Idempotent in shape: replacing again keeps one pair of markers.
        let again = replace_section(&new, "newer\n").unwrap();
        assert_eq!(again.matches(DOCS_BEGIN).count(), 1);
        assert!(again.contains("\nnewer\n") && !again.contains("new table"));
        assert!(replace_section("no markers", "x").is_err());
        let reversed = format!("{DOCS_END}\n{DOCS_BEGIN}\n");
        assert!(replace_section(&reversed, "x").is_err());
    }

    #[test]
    fn numbers_are_rounded_by_size() {
        assert_eq!(fmt_num(12345.6), "12346");
        assert_eq!(fmt_num(42.25), "42.2");
        assert_eq!(fmt_num(4.256), "4.26");
        assert_eq!(fmt_num(27.0), "27");
    }
}
