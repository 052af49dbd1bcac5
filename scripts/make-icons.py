"""Draws Natter's icon (a speech bubble on a teal rounded square) at every
size the bundles need, into icons/. Run again after changing the drawing:
python3 scripts/make-icons.py (needs Pillow: pip install pillow)."""
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "icons"
TEAL = (0, 128, 105, 255)
WHITE = (255, 255, 255, 255)


def draw(size: int) -> Image.Image:
    scale = 4  # draw large, shrink: smooth edges
    s = size * scale
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((0, 0, s - 1, s - 1), radius=s // 5, fill=TEAL)
    # the bubble and its tail
    d.ellipse((s * 0.18, s * 0.2, s * 0.82, s * 0.72), fill=WHITE)
    d.polygon([(s * 0.3, s * 0.62), (s * 0.22, s * 0.84), (s * 0.46, s * 0.68)], fill=WHITE)
    # three dots
    for x in (0.36, 0.5, 0.64):
        r = s * 0.045
        d.ellipse((s * x - r, s * 0.46 - r, s * x + r, s * 0.46 + r), fill=TEAL)
    return img.resize((size, size), Image.LANCZOS)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, size in {"32x32.png": 32, "128x128.png": 128, "128x128@2x.png": 256, "icon.png": 512}.items():
        draw(size).save(OUT / name)
    big = draw(1024)
    big.save(OUT / "icon.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    big.save(OUT / "icon.icns")


if __name__ == "__main__":
    main()
