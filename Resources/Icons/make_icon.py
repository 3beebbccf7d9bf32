"""Draw the DeepOrganSeg icon: an axial abdominal slice with coloured organs and CRF-like contours.

Writes the 128x128 PNG to both places Slicer looks for it: ``Resources/Icons/DeepOrganSeg.png``
(the extension's icon) and ``DeepOrganSeg/Resources/Icons/DeepOrganSeg.png`` (the module's).
Run ``python Resources/Icons/make_icon.py`` after changing the drawing; needs Pillow.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 128
SCALE = 4  # draw large, then downsample: smooth edges without an anti-aliasing renderer

REPOSITORY = Path(__file__).resolve().parents[2]
OUTPUTS = (REPOSITORY / "Resources" / "Icons" / "DeepOrganSeg.png",
           REPOSITORY / "DeepOrganSeg" / "Resources" / "Icons" / "DeepOrganSeg.png")

# Colours of the organs as the model names them (terminology.py), slightly brightened.
LIVER = (221, 130, 101)
SPLEEN = (157, 108, 162)
KIDNEY = (185, 102, 83)
AORTA = (224, 97, 76)
SPINE = (241, 214, 145)
BODY = (92, 96, 104)
BACKGROUND = (28, 38, 56)


def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    """A box in icon pixels (0-128) scaled to the drawing canvas."""
    return tuple(int(round(v * SCALE)) for v in (x0, y0, x1, y1))


def draw() -> Image.Image:
    canvas = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    pen = ImageDraw.Draw(canvas)
    pen.rounded_rectangle(_box(2, 2, 126, 126), radius=22 * SCALE, fill=BACKGROUND)
    pen.ellipse(_box(12, 26, 116, 104), fill=BODY)  # the abdomen, in radiological view

    organs = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    organ_pen = ImageDraw.Draw(organs)
    liver = [(19, 62), (22, 47), (31, 37), (45, 33), (60, 35), (66, 42), (60, 49), (48, 55),
             (40, 64), (33, 74), (24, 72)]  # on the image's left: the patient's right
    organ_pen.polygon([(x * SCALE, y * SCALE) for x, y in liver], fill=LIVER)
    organ_pen.ellipse(_box(85, 40, 105, 66), fill=SPLEEN)
    organ_pen.ellipse(_box(38, 68, 52, 90), fill=KIDNEY)
    organ_pen.ellipse(_box(77, 68, 91, 90), fill=KIDNEY)
    organ_pen.ellipse(_box(60, 62, 69, 71), fill=AORTA)
    organ_pen.ellipse(_box(57, 77, 72, 93), fill=SPINE)

    # A white rim around every organ (the organs, grown by a few pixels, painted underneath):
    # the crisp boundaries the CRF delivers.
    rim = organs.getchannel("A").filter(ImageFilter.MaxFilter(2 * SCALE + 1))
    canvas.paste((255, 255, 255, 255), (0, 0), rim)
    canvas.alpha_composite(organs)
    return canvas.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    icon = draw()
    for path in OUTPUTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        icon.save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
