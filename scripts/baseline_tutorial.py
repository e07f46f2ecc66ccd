"""The tutorial's converter (shared seeds, file 003), as faithfully as it can be made to run.

One image at a time; two DataFrame lookups per sample (``train[train['image_id'] == sample]``);
``cv2.resize`` then ``tf.io.encode_png``; one ``tf.io.TFRecordWriter`` per 1000 records.

Changes needed to make it run, and nothing else:
- ``process_image`` reads the undefined ``image_path``; it reads its argument ``dcm_path``.
- The DataFrame comes from our labels CSV: ``image_path`` is the image root joined with the path
  column, ``cancer`` is the target column (``--target-col``), ids are read as text.
- ``tf.io.encode_png`` accepts only uint8/uint16, so signed pixel arrays (CT) are cast with
  ``astype(np.uint16)``, as a user would do to get past the error.
- The size is a parameter (the tutorial hard-codes 224) so both tools can produce the same size.
- ``tfrecords_dir`` is the ``--out`` argument; a target that pandas read as text is cast to int.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np
import pandas as pd
import pydicom as dicom
import tensorflow as tf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--id-col", default="image_id")
    parser.add_argument("--path-col", default="path")
    parser.add_argument("--target-col", default="target")
    args = parser.parse_args()
    size = args.size

    train = pd.read_csv(args.labels, dtype=str, keep_default_na=False)
    train = train.rename(columns={args.id_col: "image_id", args.target_col: "cancer"})
    train["image_path"] = [os.path.join(args.images, p) for p in train[args.path_col]]
    tfrecords_dir = args.out
    os.makedirs(tfrecords_dir, exist_ok=True)

    NUM_RECORDS = 1000
    num_tfrecords = max(train.shape) // NUM_RECORDS
    if max(train.shape) % NUM_RECORDS:
        num_tfrecords += 1  # add one record if there are any remaining samples

    def image_feature(value):
        """Returns a bytes_list from a string / byte."""
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(value).numpy()]))

    def int64_feature(value):
        """Returns an int64_list from a bool / enum / int / uint."""
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    def process_image(dcm_path):
        """Read Image from path and resize it to (224, 224)"""
        ds = dicom.dcmread(dcm_path)
        pixels = ds.pixel_array
        if pixels.dtype.kind == "i":
            pixels = pixels.astype(np.uint16)
        image = cv2.resize(pixels, [size, size]).reshape(size, size, 1)
        return image

    def create_example(image, target):
        """Write example"""
        feature = {"image": image_feature(image), "target": int64_feature(target)}
        return tf.train.Example(features=tf.train.Features(feature=feature))

    for tfrec_num in range(num_tfrecords):
        samples = train["image_id"][(tfrec_num * NUM_RECORDS) : ((tfrec_num + 1) * NUM_RECORDS)]
        tf_dir = tfrecords_dir + f"/tfrecord_{tfrec_num * NUM_RECORDS}-{(tfrec_num + 1) * NUM_RECORDS}.tfrec"
        with tf.io.TFRecordWriter(tf_dir) as writer:
            for sample in samples:
                image_path = train[train["image_id"] == sample]["image_path"].iloc[0]
                image = process_image(image_path)
                target = int(train[train["image_id"] == sample]["cancer"].iloc[0])
                record = create_example(image, target)
                writer.write(record.SerializeToString())


if __name__ == "__main__":
    main()
