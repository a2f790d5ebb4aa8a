//! A small SVG line chart of time against rows, one line per scenario, both
//! axes logarithmic: a line parallel to the floor's grows as the floor does.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    /// (rows, seconds), in order of rows.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 9] = [
    "#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub fn svg(title: &str, series: &[Series]) -> String {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max) = bounds(all().map(|p| p.0));
    let (mut y_min, mut y_max) = bounds(all().map(|p| p.1));
    // Whole decades, so gridlines fall on 1, 10, 100 …
    x_min = x_min.log10().floor();
    x_max = x_max.log10().ceil().max(x_min + 1.0);
    y_min = y_min.log10().floor();
    y_max = y_max.log10().ceil().max(y_min + 1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |v: f64| LEFT + (v.log10() - x_min) / (x_max - x_min) * plot_w;
    let y = |v: f64| TOP + plot_h - (v.log10() - y_min) / (y_max - y_min) * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for decade in x_min as i32..=x_max as i32 {
        let v = 10f64.powi(decade);
        let px = x(v);
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0,
            human(v)
        );
    }
    for decade in y_min as i32..=y_max as i32 {
        let v = 10f64.powi(decade);
        let py = y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} s</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">rows in the model</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(r, t)| format!("{:.1},{:.1}", x(r), y(t)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for &(r, t) in &s.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"/>"#,
                x(r),
                y(t)
            );
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + plot_w + 20.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

fn human(rows: f64) -> String {
    match rows {
        r if r >= 1e6 => format!("{}M", trim(r / 1e6)),
        r if r >= 1e3 => format!("{}k", trim(r / 1e3)),
        r => trim(r),
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_on_their_decades() {
        let chart = svg(
            "t",
            &[Series {
                name: "floor <a>".into(),
                points: vec![(1e6, 1.0), (1e7, 10.0)],
            }],
        );
        // 1M is the left edge and 10M the right; 1 s the bottom and 10 s the top.
        assert!(
            chart.contains(&format!(
                "points=\"{LEFT:.1},{:.1} {:.1},{TOP:.1}\"",
                HEIGHT - BOTTOM,
                WIDTH - RIGHT
            )),
            "{chart}"
        );
        assert!(chart.contains("floor &lt;a&gt;"));
        assert!(chart.contains(">10M<") && chart.contains(">1 s<"));
    }
}
