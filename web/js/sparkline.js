// Sparklines as SVG polylines: a fixed ring of recent values per host, drawn with a non-scaling stroke.

export const SPARK_POINTS = 60;

export class Ring {
  constructor(size = SPARK_POINTS) {
    this.values = new Float32Array(size);
    this.size = size;
    this.count = 0;
    this.head = 0;
  }

  push(value) {
    this.values[this.head] = value;
    this.head = (this.head + 1) % this.size;
    if (this.count < this.size) this.count += 1;
  }

  clear() {
    this.count = 0;
    this.head = 0;
  }

  // Oldest first.
  forEach(fn) {
    const start = (this.head - this.count + this.size) % this.size;
    for (let i = 0; i < this.count; i += 1) fn(this.values[(start + i) % this.size], i);
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function createSparkline(className = "spark") {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", className);
  // x runs over the ring's slots, y over 0..100; the view box stretches to the tile's width.
  svg.setAttribute("viewBox", `0 0 ${SPARK_POINTS - 1} 100`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const area = document.createElementNS(SVG_NS, "polygon");
  area.setAttribute("class", "spark-area");
  const line = document.createElementNS(SVG_NS, "polyline");
  line.setAttribute("class", "spark-line");
  svg.append(area, line);
  return { svg, area, line };
}

// Values are clamped to [min, max]; newest point sits at the right edge, so a young host fills from the right.
export function drawSparkline(spark, ring, min = 0, max = 100) {
  if (ring.count === 0) {
    spark.line.setAttribute("points", "");
    spark.area.setAttribute("points", "");
    return;
  }
  const span = max - min || 1;
  const toY = (value) => (100 - ((Math.min(max, Math.max(min, value)) - min) / span) * 100).toFixed(1);
  let offset = SPARK_POINTS - ring.count;
  let points = "";
  ring.forEach((value, index) => {
    // A single sample still shows as a short flat stroke.
    if (ring.count === 1) {
      offset = SPARK_POINTS - 2;
      points += `${offset},${toY(value)} `;
    }
    points += `${SPARK_POINTS - ring.count + index},${toY(value)} `;
  });
  spark.line.setAttribute("points", points);
  spark.area.setAttribute("points", `${offset},100 ${points}${SPARK_POINTS - 1},100`);
}
