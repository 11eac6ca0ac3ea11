/*
 * image.c - the AMI methods (see op_internal.h and doc/design.md, "AMIs").
 *
 * register: PREPARE gathers what RegisterImage needs (the instance, its
 * volumes, its source image) and refuses what it cannot do well; SNAPSHOT
 * is the usual freeze cycle with one CreateSnapshots of every volume of the
 * instance (the root volume crash-consistent, never frozen); FINISH, after
 * the backup stopped, registers the image from those snapshots.
 *
 * create: CreateImage (NoReboot) while the database filesystems are frozen,
 * which stay frozen until DescribeImages lists a snapshot for every device
 * of the image and DescribeSnapshots finds each of them, all within
 * freeze_timeout; a timeout thaws and deregisters the half-made image.
 */
#include "op_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *image_method_name(enum image_method m)
{
	return m == IMAGE_REGISTER ? "register" : m == IMAGE_CREATE ? "create" : "";
}

/* A billing product code (devpay, marketplace, or one whose type we cannot tell). */
static bool billing_code(const struct ec2_product_code *pc)
{
	return strcmp(pc->type, "devpay") == 0 || strcmp(pc->type, "marketplace") == 0 ||
	       strcmp(pc->type, "unknown") == 0;
}

/*
 * What RegisterImage would lose: a billing product code of the instance or
 * of its source image, or a usage operation other than plain
 * "RunInstances" (RunInstances:0010 is RHEL, :000g SLES, :0002 Windows...:
 * "AMI billing information" in the EC2 User Guide).  Describes it into why.
 */
static bool loses_billing(const struct ec2_instance_info *inst, const struct ec2_image_info *src,
                          char *why, size_t whysz)
{
	const struct ec2_product_code *codes[2] = {inst->product_codes,
	                                           src ? src->product_codes : NULL};
	size_t ncodes[2] = {inst->nproduct_codes, src ? src->nproduct_codes : 0};
	const char *usage = inst->usage_operation[0] ? inst->usage_operation
	                    : src                    ? src->usage_operation
	                                             : "";
	const char *platform = inst->platform_details[0] ? inst->platform_details
	                       : src                     ? src->platform_details
	                                                 : "";
	size_t i, k;

	for (k = 0; k < 2; k++)
		for (i = 0; i < ncodes[k]; i++)
			if (billing_code(&codes[k][i])) {
				snprintf(why, whysz, "product code %s of type %s", codes[k][i].code,
				         codes[k][i].type);
				return true;
			}
	if (usage[0] && strcmp(usage, "RunInstances") != 0) {
		snprintf(why, whysz, "platform \"%s\", usage operation %s", platform, usage);
		return true;
	}
	return false;
}

/* The source image, if EC2 still shows it to us; NULL otherwise (logged). */
static struct ec2_image_info *source_image(struct helper *h, struct operation *op,
                                           const struct ec2_instance_info *inst,
                                           struct amis_err *err)
{
	struct ec2_image_info *src;
	struct ec2_image_query q = {0};
	struct amis_err derr;

	if (!inst->image_id[0])
		return NULL;
	src = xcalloc(1, sizeof(*src));
	q.image_id = inst->image_id;
	err_clear(&derr);
	if (worker_describe_image(h->worker, &q, h->cfg->ec2_timeout_ms, src, &derr) != 0 ||
	    !src->image_id[0]) {
		/* Deregistered, or another account's private image: the instance says enough. */
		log_warn("request %s: the instance's source image %s cannot be described (%s: %s); "
		         "its attributes come from the instance alone",
		         op->request_id, inst->image_id, derr.code[0] ? derr.code : "not found",
		         derr.msg);
		free(src);
		return NULL;
	}
	return src;
}

int image_prepare(struct helper *h, struct operation *op, const struct ec2_instance_info *inst,
                  struct amis_err *err)
{
	struct ec2_image_query byname = {0};
	struct ec2_image_info *src = NULL, *same = NULL, *info = NULL;
	struct ec2_volume_set *vs = NULL;
	bool root_mapped = false;
	char why[256];
	size_t i, j;
	int rc = -1;

	if (!inst->root_device_name[0] || !inst->architecture[0])
		return err_set(err, AMIS_E_IMAGE_UNSUPPORTED,
		               "DescribeInstances did not say the instance's %s: an image of it "
		               "could not be registered to boot like it",
		               inst->root_device_name[0] ? "architecture" : "root device name");
	if (inst->nvolumes > MAX_VOLUMES)
		return err_set(err, AMIS_E_TOO_MANY_VOLUMES,
		               "the instance has %zu EBS volumes; an image of it is limited to %d",
		               inst->nvolumes, MAX_VOLUMES);
	for (i = 0; i < inst->nvolumes; i++) {
		op->all_ids[op->nall] = xstrdup(inst->volumes[i].volume_id);
		snprintf(op->all_devices[op->nall], sizeof(op->all_devices[0]), "%s",
		         inst->volumes[i].device_name);
		op->nall++;
		if (!strcmp(inst->volumes[i].device_name, inst->root_device_name))
			root_mapped = true;
		if (!inst->volumes[i].device_name[0])
			return err_set(err, AMIS_E_IMAGE_UNSUPPORTED,
			               "DescribeInstances gave no device name for volume %s",
			               inst->volumes[i].volume_id);
	}
	if (!root_mapped)
		return err_set(err, AMIS_E_IMAGE_UNSUPPORTED,
		               "the root device %s of instance %s is not an EBS volume of its "
		               "block device mapping (instance store?): no image of it can boot",
		               inst->root_device_name, op->instance_id);

	/* AMI names are unique per account and region: refused now, not after the backup. */
	same = xcalloc(1, sizeof(*same));
	byname.name = op->name;
	if (worker_describe_image(h->worker, &byname, h->cfg->ec2_timeout_ms, same, err) != 0) {
		err_prefix(err, "looking for an image named \"%s\"", op->name);
		goto out;
	}
	if (same->image_id[0]) {
		err_set(err, AMIS_E_IMAGE_NAME_IN_USE,
		        "image %s is named \"%s\" already; AMI names are unique per region: choose "
		        "another name",
		        same->image_id, op->name);
		goto out;
	}

	src = source_image(h, op, inst, err);
	if (op->image == IMAGE_REGISTER && loses_billing(inst, src, why, sizeof(why))) {
		if (!op->allow_product_code_loss) {
			err_set(err, AMIS_E_BILLING_PRODUCT_CODES,
			        "the instance's image %s carries billing information (%s) that "
			        "RegisterImage does not carry over: an image made with image => "
			        "'register' would lose it (RHEL, SLES and Windows need it for "
			        "updates and licences, Marketplace products for theirs). Use image "
			        "=> 'create' (CreateImage keeps it), or allow_product_code_loss => "
			        "true",
			        inst->image_id[0] ? inst->image_id : "(unknown)", why);
			goto out;
		}
		log_warn("request %s: the image will lose the source's billing information (%s): "
		         "allow_product_code_loss",
		         op->request_id, why);
	}
	if (op->image == IMAGE_CREATE) {
		rc = 0;
		goto out;
	}

	/* register: one CreateSnapshots of every volume, the root included. */
	for (i = 0; i < op->nexclude; i++)
		free(op->exclude_ids[i]);
	op->nexclude = 0;
	op->exclude_boot = false;
	vs = xcalloc(1, sizeof(*vs));
	if (worker_describe_volumes(h->worker, (const char *const *)op->all_ids, op->nall,
	                            h->cfg->ec2_timeout_ms, vs, err) != 0)
		goto out;
	info = xcalloc(1, sizeof(*info));
	snprintf(info->name, sizeof(info->name), "%.128s", op->name);
	snprintf(info->architecture, sizeof(info->architecture), "%s", inst->architecture);
	/* HVM: the only kind current instance types run (and the API's default is paravirtual). */
	snprintf(info->virtualization_type, sizeof(info->virtualization_type), "%s",
	         inst->virtualization_type[0] ? inst->virtualization_type : "hvm");
	snprintf(info->root_device_name, sizeof(info->root_device_name), "%s",
	         inst->root_device_name);
	info->ena_support = inst->ena_support || (src && src->ena_support);
	snprintf(info->boot_mode, sizeof(info->boot_mode), "%s",
	         inst->boot_mode[0] ? inst->boot_mode
	         : src              ? src->boot_mode
	                            : "");
	if (src) {
		snprintf(info->sriov_net_support, sizeof(info->sriov_net_support), "%s",
		         src->sriov_net_support);
		snprintf(info->tpm_support, sizeof(info->tpm_support), "%s", src->tpm_support);
		snprintf(info->imds_support, sizeof(info->imds_support), "%s", src->imds_support);
	}
	for (i = 0; i < inst->nvolumes; i++) {
		struct ec2_volume_info *v = &info->mappings[info->nmappings++];

		snprintf(v->volume_id, sizeof(v->volume_id), "%s", inst->volumes[i].volume_id);
		snprintf(v->device_name, sizeof(v->device_name), "%s",
		         inst->volumes[i].device_name);
		v->delete_on_termination = inst->volumes[i].delete_on_termination;
		for (j = 0; j < vs->n; j++) {
			if (strcmp(vs->items[j].volume_id, v->volume_id) != 0)
				continue;
			snprintf(v->volume_type, sizeof(v->volume_type), "%s",
			         vs->items[j].volume_type);
			v->size_gib = vs->items[j].size_gib;
			v->iops = vs->items[j].iops;
			v->throughput = vs->items[j].throughput;
		}
		if (!v->size_gib) {
			err_set(err, AMIS_E_IMAGE_UNSUPPORTED,
			        "DescribeVolumes did not give the size of volume %s", v->volume_id);
			goto out;
		}
	}
	op->image_info = info;
	info = NULL;
	rc = 0;
out:
	free(same);
	free(src);
	free(vs);
	free(info);
	return rc;
}

/* CreateImage's DryRun: permission, name and instance checked; the connection warmed. */
int image_dry_run(struct helper *h, struct operation *op, struct ec2_tag *tags, size_t ntags,
                  struct amis_err *err)
{
	struct ec2_create_image_req r = {op->instance_id, op->name, NULL, tags, ntags, true};
	char id[32];

	return worker_create_image(h->worker, &r, h->cfg->ec2_timeout_ms,
	                           h->cfg->ec2_timeout_ms + 15000L, false, id, err);
}

/* Whether id is one of the snapshots of set s, pending or completed. */
static bool snapshot_exists(const struct ec2_snapshot_set *s, const char *id)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (!strcmp(s->items[i].snapshot_id, id))
			return !strcmp(s->items[i].state, "pending") ||
			       !strcmp(s->items[i].state, "completed");
	return false;
}

/*
 * create, while frozen: CreateImage, then DescribeImages until every device
 * of the image has a snapshot and DescribeSnapshots (by the request-id tag
 * CreateImage set on them) finds each pending or completed.  Every call and
 * the wait end at deadline_usec.  op->image_id and op->snaps are what EC2
 * made, also on failure.
 */
int image_create_while_frozen(struct helper *h, struct operation *op, const struct ec2_tag *tags,
                              size_t ntags, long timeout_ms, long long deadline_usec,
                              struct amis_err *err)
{
	char desc[512];
	struct ec2_create_image_req r = {op->instance_id, op->name, desc, tags, ntags, false};
	struct ec2_image_query q = {0};
	struct ec2_image_info *img = xcalloc(1, sizeof(*img));
	size_t have = 0, i;
	int polls = 0, rc = -1;

	snprintf(desc, sizeof(desc), "ami_snapshot %s (request %s)", op->name, op->request_id);
	if (worker_create_image(h->worker, &r, timeout_ms, timeout_ms + WORKER_WAIT_SLACK_MS,
	                        op->freeze, op->image_id, err) != 0)
		goto out;
	q.image_id = op->image_id;
	for (;;) {
		long left = (long)((deadline_usec - mono_usec()) / 1000);

		if (left <= 0)
			break;
		if (h->thaw_requested) {
			err_set(err, AMIS_E_THAW_REQUESTED,
			        "an administrator asked for a thaw while the image's snapshots "
			        "were awaited");
			goto out;
		}
		if (h->stop && *h->stop && freeze_plan_any_frozen(&op->plan)) {
			err_set(
			    err, AMIS_E_STOP_REQUESTED,
			    "the helper was told to stop while the image's snapshots were awaited");
			goto out;
		}
		/* Never a new worker (fork, exec, IMDS) while frozen. */
		if (op->freeze && !worker_running(h->worker)) {
			err_set(err, AMIS_E_WORKER_DIED,
			        "the EC2 worker died while the image's snapshots were awaited");
			goto out;
		}
		polls++;
		if (worker_describe_image(h->worker, &q, left, img, err) != 0)
			goto out;
		if (!strcmp(img->state, "failed") || !strcmp(img->state, "error")) {
			err_set(err, AMIS_E_IMAGE_FAILED, "image %s is in state %s", op->image_id,
			        img->state);
			goto out;
		}
		for (i = 0, have = 0; i < img->nmappings; i++)
			if (img->mappings[i].snapshot_id[0])
				have++;
		if (img->nmappings && have == img->nmappings) {
			left = (long)((deadline_usec - mono_usec()) / 1000);
			if (left <= 0)
				break;
			if (op->freeze && !worker_running(h->worker)) {
				err_set(
				    err, AMIS_E_WORKER_DIED,
				    "the EC2 worker died while the image's snapshots were awaited");
				goto out;
			}
			if (worker_find_snapshots(h->worker, REQUEST_ID_TAG, op->request_id, left,
			                          &op->snaps, err) != 0)
				goto out;
			for (i = 0; i < img->nmappings; i++)
				if (!snapshot_exists(&op->snaps, img->mappings[i].snapshot_id))
					break;
			if (i == img->nmappings) {
				rc = 0;
				goto out;
			}
		}
		left = (long)((deadline_usec - mono_usec()) / 1000);
		server_poll(NULL, 0,
		            (int)(left < IMAGE_POLL_MS ? (left > 0 ? left : 0) : IMAGE_POLL_MS));
	}
	err_set(err, AMIS_E_IMAGE_TIMEOUT,
	        "CreateImage made image %s, but only %zu of its %zu snapshots existed after %ld ms "
	        "(%d looks; freeze_timeout)",
	        op->image_id, have, img->nmappings, timeout_ms, polls);
out:
	free(img);
	return rc;
}

/*
 * After a failed create, thawed: the half-made image (found by its
 * request-id tag when CreateImage's answer was lost) is deregistered, or
 * tagged failed if that fails; said in err.  Its snapshots are found and
 * tagged failed by the caller (find_lost_snapshots, tag_backup_state).
 */
void image_cleanup_failed(struct helper *h, struct operation *op, struct amis_err *err)
{
	struct ec2_tag tag = {"ami-snapshot:backup-state", "failed"};
	const char *ids[1];
	struct amis_err derr;

	err_clear(&derr);
	if (op->image != IMAGE_CREATE)
		return;
	if (!op->image_id[0] && answer_lost(err)) {
		struct ec2_image_query q = {0};
		struct ec2_image_info *img = xcalloc(1, sizeof(*img));

		q.tag_key = REQUEST_ID_TAG;
		q.tag_value = op->request_id;
		if (worker_describe_image(h->worker, &q, h->cfg->ec2_timeout_ms, img, &derr) == 0)
			snprintf(op->image_id, sizeof(op->image_id), "%s", img->image_id);
		else
			err_append(err, "looking for an image made anyway failed: %s", derr.code);
		free(img);
	}
	if (!op->image_id[0])
		return;
	if (worker_deregister_image(h->worker, op->image_id, h->cfg->ec2_timeout_ms, &derr) == 0) {
		log_warn("request %s: deregistered the half-made image %s", op->request_id,
		         op->image_id);
		err_append(err, "the half-made image %s was deregistered", op->image_id);
		return;
	}
	ids[0] = op->image_id;
	log_warn("request %s: could not deregister image %s: %s: %s", op->request_id, op->image_id,
	         derr.code, derr.msg);
	if (worker_create_tags(h->worker, ids, 1, &tag, 1, h->cfg->ec2_timeout_ms, &derr) == 0)
		err_append(err, "image %s could not be deregistered (%s) and is tagged %s=failed",
		           op->image_id, derr.code, tag.key);
	else
		err_append(err, "image %s could neither be deregistered nor tagged failed (%s)",
		           op->image_id, derr.code);
}

/*
 * register, after the backup stopped: RegisterImage from the snapshot set
 * with tags.  A lost answer is looked up by the request-id tag (twice:
 * DescribeImages is eventually consistent).
 */
int image_register(struct helper *h, struct operation *op, const struct ec2_tag *tags, size_t ntags,
                   struct amis_err *err)
{
	struct ec2_image_info *info = op->image_info;
	struct ec2_register_image_req r;
	char desc[512];
	size_t i, j;
	int attempt;

	if (!info)
		return err_set(err, AMIS_E_INVALID_REQUEST, "no image was prepared");
	for (i = 0; i < info->nmappings; i++) {
		info->mappings[i].snapshot_id[0] = '\0';
		for (j = 0; j < op->snaps.n; j++)
			if (!strcmp(op->snaps.items[j].volume_id, info->mappings[i].volume_id))
				snprintf(info->mappings[i].snapshot_id,
				         sizeof(info->mappings[i].snapshot_id), "%s",
				         op->snaps.items[j].snapshot_id);
		if (!info->mappings[i].snapshot_id[0])
			return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
			               "no snapshot of volume %s (%s) for the image",
			               info->mappings[i].volume_id, info->mappings[i].device_name);
	}
	snprintf(desc, sizeof(desc), "ami_snapshot %s (request %s)", op->name, op->request_id);
	r = (struct ec2_register_image_req){info, desc, tags, ntags, false};
	if (worker_register_image(h->worker, &r, h->cfg->ec2_timeout_ms, op->image_id, err) == 0)
		return 0;
	if (!answer_lost(err))
		return -1;
	for (attempt = 0; attempt < 2; attempt++) {
		struct ec2_image_query q = {0};
		struct ec2_image_info *img = xcalloc(1, sizeof(*img));
		struct amis_err derr;

		if (attempt)
			server_poll(NULL, 0, LOST_SNAPSHOTS_RECHECK_MS);
		q.tag_key = REQUEST_ID_TAG;
		q.tag_value = op->request_id;
		err_clear(&derr);
		if (worker_describe_image(h->worker, &q, h->cfg->ec2_timeout_ms, img, &derr) == 0 &&
		    img->image_id[0]) {
			snprintf(op->image_id, sizeof(op->image_id), "%s", img->image_id);
			op->image_found_by_tag = true;
			log_warn("request %s: RegisterImage's answer was lost (%s), but it made "
			         "image %s",
			         op->request_id, err->code, op->image_id);
			free(img);
			return 0;
		}
		free(img);
	}
	return -1;
}
