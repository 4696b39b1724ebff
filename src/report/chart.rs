//! A small chart description and its SVG rendering with `plotters` (SVG backend, no font
//! files: plotters estimates text width and the browser draws `<text>` with its own fonts).
//! A chart that cannot be drawn becomes a short note instead of failing the report.

use plotters::prelude::*;

use super::html::Plot;

/// Pixel size of one chart.
pub const SIZE: (u32, u32) = (540, 300);

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Points joined by straight lines (each marked when there are few).
    Line,
    /// A step function: each value holds until the next point.
    Step,
    /// Unjoined dots.
    Dots,
    /// Unjoined crosses, for points that must stand out (failures).
    Crosses,
    /// Bars from zero, each `width` wide in x units starting at its x.
    Bars {
        /// Bar width in x units, ×1e6 (integral so the mark stays `Eq`).
        width_micro: u64,
    },
}

/// One data series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text (shown beside the plot); empty for no legend entry.
    pub name: String,
    /// Colour index into the palette.
    pub color: usize,
    /// How it is drawn.
    pub mark: Mark,
    /// The data, in axis units.
    pub points: Vec<(f64, f64)>,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// X axis description, with its unit.
    pub x_label: String,
    /// Y axis description, with its unit.
    pub y_label: String,
    /// Start the y axis at zero rather than at the data's minimum.
    pub y_from_zero: bool,
    /// The series, drawn in order.
    pub series: Vec<Series>,
}

/// Lines with at most this many points get a marker on each.
const MARKED_VERTICES: usize = 50;

/// Colour-blind-safe palette (Okabe–Ito).
const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

impl Plot {
    /// The plot of `chart` under `title`, its legend taken from the named series.
    pub fn from_chart(title: &str, chart: &Chart) -> Self {
        Plot {
            title: title.to_string(),
            svg: render(chart),
            legend: legend(chart),
        }
    }
}

/// The named series with their colours (`#rrggbb`), for a legend beside the plot: drawn in
/// HTML rather than in the SVG, where it would hide data.
pub fn legend(chart: &Chart) -> Vec<(String, String)> {
    chart
        .series
        .iter()
        .filter(|s| !s.name.is_empty())
        .map(|s| {
            let RGBColor(r, g, b) = PALETTE[s.color % PALETTE.len()];
            (s.name.clone(), format!("#{r:02x}{g:02x}{b:02x}"))
        })
        .collect()
}

/// The chart as an `<svg>` element (or a note saying why there is none).
pub fn render(chart: &Chart) -> String {
    let Some(ranges) = ranges(chart) else {
        return note("no data");
    };
    let mut svg = String::new();
    let drawn = draw(chart, ranges, &mut svg);
    match drawn {
        Ok(()) => svg,
        Err(err) => {
            tracing::warn!("a report plot could not be drawn: {err}");
            note(&format!("plot unavailable: {err}"))
        }
    }
}

fn note(text: &str) -> String {
    format!("<p><i>{}</i></p>", super::html::escape(text))
}

type Ranges = ((f64, f64), (f64, f64));

/// The axes' ranges from the data, padded so no point sits on the frame.
fn ranges(chart: &Chart) -> Option<Ranges> {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let finite = points.filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in finite {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    for s in &chart.series {
        if let Mark::Bars { width_micro } = s.mark {
            x1 += width_micro as f64 / 1e6;
        }
    }
    if !x0.is_finite() {
        return None;
    }
    if chart.y_from_zero {
        y0 = y0.min(0.0);
    }
    Some((pad(x0, x1), pad(y0, y1)))
}

/// Spans narrower than this share of the values' magnitude are rounding noise: a constant
/// TTFT of 100 ms measured as 100 ± 1e-12 must not get an axis of twelve equal labels.
const MIN_RELATIVE_SPAN: f64 = 1e-6;

fn pad(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if span <= MIN_RELATIVE_SPAN * lo.abs().max(hi.abs()) {
        let half = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - half, hi + half);
    }
    (
        if lo == 0.0 { 0.0 } else { lo - span * 0.03 },
        hi + span * 0.05,
    )
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(chart: &Chart, ((x0, x1), (y0, y1)): Ranges, svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut ctx = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(62)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(RGBColor(238, 238, 238))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;

    for series in &chart.series {
        draw_series(&mut ctx, series, ((x0, x1), (y0, y1)))?;
    }
    root.present()?;
    Ok(())
}

type Ctx<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn draw_series(ctx: &mut Ctx<'_, '_>, series: &Series, ranges: Ranges) -> DrawResult {
    let color = PALETTE[series.color % PALETTE.len()];
    let points: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    match series.mark {
        Mark::Line => {
            let line = thin_line(points, ranges);
            // Few points (a sweep's runs): mark each one.
            let marked = if line.len() <= MARKED_VERTICES {
                line.len()
            } else {
                0
            };
            let vertices: Vec<(f64, f64)> = line[..marked].to_vec();
            ctx.draw_series(LineSeries::new(line, color.stroke_width(2)))?;
            ctx.draw_series(
                vertices
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        Mark::Step => {
            let line = thin_line(step_points(points.into_iter()), ranges);
            ctx.draw_series(LineSeries::new(line, color.stroke_width(2)))?;
        }
        Mark::Dots => {
            let dots = thin_dots(points, ranges).into_iter();
            ctx.draw_series(dots.map(|p| Circle::new(p, 2, color.mix(0.6).filled())))?;
        }
        Mark::Crosses => {
            let dots = thin_dots(points, ranges).into_iter();
            ctx.draw_series(dots.map(|p| Cross::new(p, 4, color.stroke_width(2))))?;
        }
        Mark::Bars { width_micro } => {
            let width = width_micro as f64 / 1e6;
            ctx.draw_series(points.into_iter().map(|(x, y)| {
                Rectangle::new([(x, 0.0), (x + width * 0.92, y)], color.mix(0.8).filled())
            }))?;
        }
    }
    Ok(())
}

/// An axis tick label: no trailing zeros, at most two decimals (`2000`, `0.25`, `12.5`).
fn tick(value: &f64) -> String {
    let text = if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// The pixel cell of a point, on a grid the size of the whole chart (a little finer than
/// the plot area, so thinning never merges points the eye could tell apart).
fn cell(((x0, x1), (y0, y1)): Ranges, (x, y): (f64, f64)) -> (i64, i64) {
    let column = (x - x0) / (x1 - x0) * f64::from(SIZE.0);
    let row = (y - y0) / (y1 - y0) * f64::from(SIZE.1);
    (column as i64, row as i64)
}

/// Dots with at most one per pixel cell: thousands of requests then cost kilobytes, not
/// megabytes, and look the same.
fn thin_dots(points: Vec<(f64, f64)>, ranges: Ranges) -> Vec<(f64, f64)> {
    let mut seen = std::collections::HashSet::new();
    points
        .into_iter()
        .filter(|&p| seen.insert(cell(ranges, p)))
        .collect()
}

/// A line's points reduced to first, lowest, highest and last per pixel column, which draws
/// the same envelope.
fn thin_line(points: Vec<(f64, f64)>, ranges: Ranges) -> Vec<(f64, f64)> {
    if points.len() <= 4 * SIZE.0 as usize {
        return points;
    }
    let mut out = Vec::new();
    for column in points.chunk_by(|a, b| cell(ranges, *a).0 == cell(ranges, *b).0) {
        let lowest = column.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        let highest = column.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        let (first, last) = (column.first(), column.last());
        let mut keep: Vec<&(f64, f64)> = [first, lowest, highest, last]
            .into_iter()
            .flatten()
            .collect();
        keep.sort_by(|a, b| a.0.total_cmp(&b.0));
        keep.dedup();
        out.extend(keep.into_iter().copied());
    }
    out
}

/// A step function's corner points: each value held until the next x.
fn step_points(points: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (x, y) in points {
        if let Some(&(_, prev_y)) = out.last() {
            out.push((x, prev_y));
        }
        out.push((x, y));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGES: Ranges = ((0.0, 1.0), (0.0, 1.0));

    #[test]
    fn dots_in_one_pixel_cell_are_drawn_once() {
        let dots = vec![(0.5, 0.5), (0.5000001, 0.5000001), (0.9, 0.1)];
        assert_eq!(thin_dots(dots, RANGES), vec![(0.5, 0.5), (0.9, 0.1)]);
    }

    #[test]
    fn thinned_line_keeps_each_columns_extremes() {
        // 10,000 points in 540 columns: a spike in the middle must survive.
        let mut line: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64 / 10_000.0, 0.5)).collect();
        line[5_003].1 = 0.99;
        let thin = thin_line(line, RANGES);
        assert!(thin.len() < 4 * SIZE.0 as usize, "{}", thin.len());
        assert!(thin.contains(&(0.5003, 0.99)));
        assert!(thin.windows(2).all(|w| w[0].0 <= w[1].0), "x stays ordered");
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(tick(&2000.0), "2000");
        assert_eq!(tick(&0.25), "0.25");
        assert_eq!(tick(&12.5), "12.5");
        assert_eq!(tick(&-0.001), "0");
    }

    #[test]
    fn constant_data_gets_a_visible_range() {
        let (lo, hi) = pad(100.0, 100.0 + 1e-11);
        assert!(lo <= 95.0 && hi >= 105.0, "{lo}..{hi}");
    }
}
