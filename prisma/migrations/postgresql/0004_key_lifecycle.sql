-- AlterTable
ALTER TABLE "SigningKey" ADD COLUMN     "activateAt" TIMESTAMP(3),
ADD COLUMN     "removeAt" TIMESTAMP(3);

