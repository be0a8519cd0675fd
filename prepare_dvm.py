"""Turn a downloaded DVM-Car release into the image table that configs/dvm_ldm.py trains on.

    python prepare_dvm.py --tables /data/dvm/tables --output /data/dvm/dvm_front.csv
    python train.py --config configs/dvm_ldm.py --workdir runs/dvm \
        --config.data.image_dir=/data/dvm/images --config.data.csv_path=/data/dvm/dvm_front.csv \
        --config.first_stage.pretrained=/path/to/stable-diffusion-2-1/vae

``--tables`` holds the release's ``Image_table.csv``, ``Ad_table (extra).csv`` and ``Price_table.csv``; the image
paths written are relative to the release's image folder (``Brand/Model/Year/Colour/<image name>``). Values the
tables lack are left empty: missing conditions (mcjax.data.dvm_car). Bad input prints one line, ``error: ...``, and
exits with status 2.
"""

from absl import app, flags

from mcjax import runtime
from mcjax.data import dvm_car
from mcjax.io import atomic_write_text

flags.DEFINE_string("tables", None, "Folder of the release's CSV tables.")
flags.DEFINE_string("output", None, "The image table to write (CSV).")
flags.DEFINE_list("viewpoints", ["0"], "Predicted_viewpoint values to keep (empty: every view).")
flags.DEFINE_list("quality", ["P"], "Quality_check values to keep (empty: every image).")
flags.mark_flags_as_required(["tables", "output"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    table = dvm_car.prepare(FLAGS.tables, FLAGS.viewpoints, FLAGS.quality)
    atomic_write_text(FLAGS.output, table)
    print(f"wrote {len(table.splitlines()) - 1} images to {FLAGS.output}")


if __name__ == "__main__":
    app.run(runtime.exit_on_input_errors(main))
