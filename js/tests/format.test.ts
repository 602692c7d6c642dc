import { formatBytes, formatEta, formatRate, formatSpeed, percent } from "../src/format";

describe("format", () => {
  it("formats byte counts with decimal units", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(999)).toBe("999 B");
    expect(formatBytes(1536)).toBe("1.54 KB");
    expect(formatBytes(269_060_552)).toBe("269 MB");
    expect(formatBytes(3_087_467_144)).toBe("3.09 GB");
    expect(formatBytes(null)).toBe("—");
    expect(formatBytes(-1)).toBe("—");
  });

  it("formats speed, and shows a dash when nothing moves", () => {
    expect(formatSpeed(4_200_000)).toBe("4.20 MB/s");
    expect(formatSpeed(0)).toBe("—");
    expect(formatSpeed(Number.NaN)).toBe("—");
  });

  it("formats time left in seconds, minutes and hours", () => {
    expect(formatEta(0.2)).toBe("1 s left");
    expect(formatEta(45)).toBe("45 s left");
    expect(formatEta(185)).toBe("3 min 05 s left");
    expect(formatEta(3720)).toBe("1 h 02 min left");
    expect(formatEta(null)).toBe("");
    expect(formatEta(Number.POSITIVE_INFINITY)).toBe("");
  });

  it("clamps percent to 0..100 and treats an unknown total as 0", () => {
    expect(percent(45, 100)).toBe(45);
    expect(percent(999, 100)).toBe(100);
    expect(percent(10, 0)).toBe(0);
    expect(percent(-5, 100)).toBe(0);
  });

  it("formats tokens per second with one decimal", () => {
    expect(formatRate(18.345)).toBe("18.3 tok/s");
    expect(formatRate(null)).toBe("");
  });
});
