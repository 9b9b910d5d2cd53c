"""Recreate the Teams app icons next to this file: `python deploy/teams/make_icons.py`.

- `color.png`: 192×192, opaque, a white speech bubble holding an open book on the accent
  colour (the manifest's `accentColor`).
- `outline.png`: 32×32, the same bubble drawn in white on a transparent background; every pixel
  is either opaque white or fully transparent, as Teams asks of outline icons.

Needs Pillow (installed with the project's dependencies).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ACCENT = (0x2C, 0x3E, 0x50)  # manifest.json "accentColor": "#2C3E50"
WHITE = (255, 255, 255)
COLOR_SIZE = 192
OUTLINE_SIZE = 32
_SCALE = 4  # the colour icon is drawn this much larger, then scaled down (smooth edges)


def color_icon() -> Image.Image:
    s = COLOR_SIZE * _SCALE

    def p(v: float) -> int:  # a coordinate on the 192 grid → the large canvas
        return round(v * _SCALE)

    image = Image.new("RGB", (s, s), ACCENT)
    draw = ImageDraw.Draw(image)
    # The bubble and its tail (bottom left).
    draw.rounded_rectangle((p(28), p(34), p(164), p(138)), radius=p(26), fill=WHITE)
    draw.polygon([(p(52), p(130)), (p(44), p(166)), (p(88), p(134))], fill=WHITE)
    # An open book inside: two pages meeting at the spine, with a few lines of text each.
    spine = p(96)
    draw.polygon([(p(50), p(60)), (spine, p(68)), (spine, p(118)), (p(50), p(110))], fill=ACCENT)
    draw.polygon([(spine, p(68)), (p(142), p(60)), (p(142), p(110)), (spine, p(118))], fill=ACCENT)
    draw.line([(spine, p(68)), (spine, p(118))], fill=WHITE, width=p(3))
    for i in range(3):
        y = 78 + 12 * i
        draw.line([(p(58), p(y)), (p(88), p(y + 5))], fill=WHITE, width=p(3))
        draw.line([(p(104), p(y + 5)), (p(134), p(y))], fill=WHITE, width=p(3))
    return image.resize((COLOR_SIZE, COLOR_SIZE), Image.Resampling.LANCZOS)


def outline_icon() -> Image.Image:
    """Drawn pixel for pixel at 32×32, without anti-aliasing: only white or transparent."""
    image = Image.new("RGBA", (OUTLINE_SIZE, OUTLINE_SIZE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    white = (*WHITE, 255)
    draw.rounded_rectangle((2, 4, 29, 23), radius=5, outline=white, width=2)
    draw.polygon([(8, 22), (7, 29), (14, 22)], fill=white)
    # The book: a spine and three lines of text on each page.
    draw.rectangle((15, 8, 16, 19), fill=white)
    for y in (9, 13, 17):
        draw.rectangle((8, y, 12, y + 1), fill=white)
        draw.rectangle((19, y, 23, y + 1), fill=white)
    return image


def main() -> None:
    color_icon().save(HERE / "color.png", optimize=True)
    outline_icon().save(HERE / "outline.png", optimize=True)
    print(f"wrote {HERE / 'color.png'} and {HERE / 'outline.png'}")


if __name__ == "__main__":
    main()
