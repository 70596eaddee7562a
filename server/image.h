/*
 * image.h - opening the image to export as qemu-nbd's command line says,
 * -s's temporary overlay included.
 */
#ifndef SNAPNBD_IMAGE_H
#define SNAPNBD_IMAGE_H

#include "block/block.h"
#include "cli.h"

/* The node to export, or NULL with @errp set. */
BlockNode *image_open(const CliOptions *o, GError **errp);

#endif
